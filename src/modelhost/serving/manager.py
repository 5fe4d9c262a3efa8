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
from modelhost.errors import LoadFailed, NotFound, NotReady, PlatformError
from modelhost.registry.service import get_version_by_id, read_weights
from modelhost.serving.runtime import TorchRuntime
from modelhost.serving.service import (
    Deployment,
    RuntimeName,
    delete_deployment,
    deploy,
    list_deployments,
    resolve_target,
)

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
        self._deploy_lock = threading.Lock()  # one deploy at a time: store and memory agree
        self.started = threading.Event()

    def build(self, version_id: int) -> TorchRuntime:
        """Load a version into a new runtime (weights verified by sha256). Raises LoadFailed."""
        try:
            with self.db.session() as s:
                version = get_version_by_id(s, version_id)
                weights = read_weights(s, self.store, version)
            return TorchRuntime(version.manifest, weights)
        except PlatformError:
            raise
        except Exception as e:
            raise LoadFailed(f"version {version_id} could not be loaded: {type(e).__name__}: {e}") from e

    def _set(self, entry: LoadedDeployment) -> LoadedDeployment:
        with self._lock:
            self._loaded[entry.deployment.name] = entry
        return entry

    def load(self, dep: Deployment) -> LoadedDeployment:
        """Load a stored deployment (at start); a failure is recorded on it, not raised."""
        try:
            return self._set(LoadedDeployment(dep, "ready", self.build(dep.version_id)))
        except PlatformError as e:  # reported on the deployment; other deployments keep serving
            log.error("deployment %s failed to load: %s", dep.name, e.message)
            return self._set(LoadedDeployment(dep, "failed", error=e.message))

    def deploy(
        self,
        name: str,
        model: str,
        version: int | None = None,
        runtime: RuntimeName = "torch",
        replace: bool = True,
    ) -> LoadedDeployment:
        """Create or repoint a deployment. The new version is loaded before anything changes:
        if it fails to load, the store and the version being served stay as they were."""
        with self._deploy_lock:
            with self.db.session() as s:
                target = resolve_target(s, name, model, version, replace)
            new_runtime = self.build(target.id)
            with self.db.session() as s:
                dep, _ = deploy(s, name, model, target.number, runtime, replace)
            return self._set(LoadedDeployment(dep, "ready", new_runtime))

    def load_all(self) -> None:
        with self.db.session() as s:
            deployments = list_deployments(s)
        for dep in deployments:
            self.load(dep)
        self.started.set()

    def undeploy(self, name: str) -> None:
        """Delete the deployment from the store, then stop serving it."""
        with self._deploy_lock:
            with self.db.session() as s:
                delete_deployment(s, name)
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
