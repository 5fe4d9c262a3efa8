"""Loaded deployments in this process: load, swap, unload, and predict off the event loop."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

import anyio.to_thread
import numpy as np

from modelhost.artifacts import ArtifactStore
from modelhost.db import Database
from modelhost.errors import NotFound, NotReady
from modelhost.registry.service import get_version_by_id, read_weights
from modelhost.serving.runtime import TorchRuntime
from modelhost.serving.service import Deployment, list_deployments

log = logging.getLogger("modelhost.serving")


@dataclass(frozen=True)
class LoadedDeployment:
    deployment: Deployment
    state: Literal["loading", "ready", "failed"]
    runtime: TorchRuntime | None = None
    error: str | None = None


class DeploymentManager:
    """Holds one runtime per deployment name.

    A new version is loaded completely before it replaces the old one, so requests in flight
    finish on the old runtime and new ones go to the new one: an update drops nothing.
    """

    def __init__(self, db: Database, store: ArtifactStore) -> None:
        self.db, self.store = db, store
        self._loaded: dict[str, LoadedDeployment] = {}
        self._lock = threading.Lock()
        self.started = threading.Event()

    def load(self, dep: Deployment) -> LoadedDeployment:
        current = self._loaded.get(dep.name)
        if current and current.state == "ready" and current.deployment.version_id == dep.version_id:
            return current
        if current is None:
            self._loaded[dep.name] = LoadedDeployment(dep, "loading")
        try:
            with self.db.session() as s:
                version = get_version_by_id(s, dep.version_id)
                weights = read_weights(s, self.store, version)
            entry = LoadedDeployment(dep, "ready", TorchRuntime(version.manifest, weights))
        except Exception as e:  # reported on the deployment; other deployments keep serving
            log.exception("deployment %s failed to load", dep.name)
            entry = LoadedDeployment(dep, "failed", error=f"{type(e).__name__}: {e}")
        with self._lock:
            self._loaded[dep.name] = entry
        return entry

    def load_all(self) -> None:
        with self.db.session() as s:
            deployments = list_deployments(s)
        for dep in deployments:
            self.load(dep)
        self.started.set()

    def unload(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)

    def get(self, name: str) -> LoadedDeployment:
        entry = self._loaded.get(name)
        if entry is None:
            raise NotFound(f"deployment {name!r} not found")
        return entry

    def runtime(self, name: str) -> tuple[Deployment, TorchRuntime]:
        entry = self.get(name)
        if entry.state != "ready" or entry.runtime is None:
            raise NotReady(
                f"deployment {name!r} is {entry.state}" + (f": {entry.error}" if entry.error else "")
            )
        return entry.deployment, entry.runtime

    async def predict(self, name: str, x: np.ndarray) -> tuple[Deployment, dict[str, np.ndarray]]:
        dep, rt = self.runtime(name)
        return dep, await anyio.to_thread.run_sync(rt.predict, x)

    @property
    def ready(self) -> bool:
        return self.started.is_set()

    def states(self) -> dict[str, LoadedDeployment]:
        return dict(self._loaded)
