"""Loaded deployments in this process: load, swap, roll back, unload.

A deployment serves one or more versions ("arms": a traffic split), and maybe a shadow;
each arm has its runtime and its batcher. New versions are loaded completely before they
replace the old ones; requests already queued on a replaced batcher are answered by it (it
drains, then stops) while new requests go to the new arms. So an update drops nothing, and
a version that fails to load changes nothing. Recently used runtimes stay warm, so a
rollback swaps back at once instead of loading again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Literal

from modelhost.artifacts import ArtifactStore
from modelhost.auth.authz import SYSTEM, Principal
from modelhost.db import Database
from modelhost.errors import LoadFailed, NotFound, NotReady, PlatformError
from modelhost.observability.llm import LLMMetrics
from modelhost.observability.metrics import Metrics, ServedMetrics
from modelhost.registry.manifest import Signature
from modelhost.registry.service import ModelVersion, get_version_by_id, read_version_file
from modelhost.serving.batcher import Batcher
from modelhost.serving.runtimes import Runtime, default_runtime, load_runtime
from modelhost.serving.service import (
    Deployment,
    DeploySpec,
    Resolved,
    Target,
    delete_deployment,
    deploy,
    following,
    get_deployment,
    list_deployments,
    previous_spec,
    resolve,
)

log = logging.getLogger("modelhost.serving")
WARM_RUNTIMES = 8


@dataclass(eq=False)
class Arm:
    """One served version of a deployment: its runtime and (once serving) its batcher."""

    target: Target
    runtime: Runtime
    batcher: Batcher | None = field(default=None, repr=False)
    metrics: ServedMetrics | None = field(default=None, repr=False)

    @property
    def signature(self) -> Signature:
        return self.runtime.manifest.signature


@dataclass(eq=False)
class LoadedDeployment:
    deployment: Deployment
    state: Literal["loading", "ready", "failed"]
    arms: list[Arm] = field(default_factory=list)
    shadow: Arm | None = None
    error: str | None = None
    started: bool = False
    """Every arm has its batcher (set on the event loop by ``DeploymentManager.serving``)."""

    def pick(self, version: str | None = None) -> Arm:
        """The arm for a request: the named version, or one drawn by traffic weight."""
        if version is not None:
            for arm in self.arms:
                if str(arm.target.version) == version:
                    return arm
            served = ", ".join(str(a.target.version) for a in self.arms)
            raise NotFound(f"deployment {self.deployment.name!r} serves version(s) {served}, not {version!r}")
        if len(self.arms) == 1:
            return self.arms[0]
        return random.choices(self.arms, weights=[a.target.weight for a in self.arms])[0]

    @property
    def runtime(self) -> Runtime | None:
        """The primary arm's runtime (the version with the largest share)."""
        for arm in self.arms:
            if arm.target.version_id == self.deployment.version_id:
                return arm.runtime
        return None

    @property
    def deployment_signature(self) -> Signature:
        assert self.arms, "only a ready deployment has a signature"
        return self.pick(str(self.deployment.version)).signature


class DeploymentStatus(Deployment):
    """A stored deployment with what this process is doing with it."""

    state: Literal["loading", "ready", "failed", "unknown"]
    error: str | None


class DeploymentManager:
    def __init__(self, db: Database, store: ArtifactStore, metrics: Metrics | None = None) -> None:
        self.db, self.store, self.metrics = db, store, metrics or Metrics()
        self.llm_metrics = LLMMetrics(self.metrics.registry)
        self._loaded: dict[str, LoadedDeployment] = {}
        self._warm: collections.OrderedDict[tuple[int, str, str, str], Runtime] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._deploy_lock = threading.RLock()  # one deploy at a time: store and memory agree
        self.started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the batchers run on (the server's)."""
        self.loop = loop

    # --- loading ------------------------------------------------------------------------

    def build(self, version: ModelVersion, runtime: str, precision: str = "fp32") -> Runtime:
        """A runtime for a version (warm if recently used; files verified by sha256)."""
        # The files' digests too: a deleted version's id can come back (SQLite reuses the
        # highest rowid), and must not find the deleted model's runtime still warm.
        key = (version.id, runtime, precision, "|".join(sorted(version.files.values())))
        with self._lock:
            if key in self._warm:
                self._warm.move_to_end(key)
                return self._warm[key]

        def read_file(name: str) -> bytes:
            with self.db.session() as s:
                return read_version_file(s, self.store, version, name)

        try:
            built = load_runtime(runtime, version.manifest, read_file, precision)
        except PlatformError:
            raise
        except Exception as e:
            what = f"version {version.number} of {version.model!r}"
            raise LoadFailed(f"{what} could not be loaded: {type(e).__name__}: {e}") from e
        with self._lock:
            self._warm[key] = built
            while len(self._warm) > WARM_RUNTIMES:
                self._warm.popitem(last=False)
        return built

    def _arms(
        self, resolved: Resolved, dep: Deployment | None, runtime: str, precision: str = "fp32"
    ) -> tuple[list[Arm], Arm | None]:
        """Runtimes for every version of a resolved spec; raises before anything changes."""
        built = {v.id: self.build(v, runtime, precision) for v, _ in resolved.targets}
        shadow_rt = self.build(resolved.shadow, runtime, precision) if resolved.shadow else None
        if dep is None:
            return [], None
        arms = [Arm(t, built[t.version_id]) for t in dep.targets]
        shadow = Arm(dep.shadow, shadow_rt) if dep.shadow and shadow_rt else None
        return arms, shadow

    def _set(self, entry: LoadedDeployment) -> LoadedDeployment:
        with self._lock:
            old = self._loaded.get(entry.deployment.name)
            self._loaded[entry.deployment.name] = entry
        for arm in entry.arms:
            labels = (entry.deployment.name, str(arm.target.version))
            self.metrics.replicas.labels(*labels).set(entry.deployment.replicas)
        if old is not None:
            self._retire(old)
        return entry

    def _retire(self, old: LoadedDeployment) -> None:
        """Let replaced batchers answer what they have queued, then stop them."""
        if self.loop is None or self.loop.is_closed():
            return
        for arm in [*old.arms, *([old.shadow] if old.shadow else [])]:
            if arm.batcher is not None:
                asyncio.run_coroutine_threadsafe(arm.batcher.close(), self.loop)

    def load(self, dep: Deployment) -> LoadedDeployment:
        """Load a stored deployment (at start); a failure is recorded on it, not raised."""
        try:
            with self.db.session() as s:
                resolved = Resolved(
                    targets=[(get_version_by_id(s, t.version_id), t.weight) for t in dep.targets],
                    shadow=get_version_by_id(s, dep.shadow.version_id) if dep.shadow else None,
                    project_id=dep.project_id,
                )
            arms, shadow = self._arms(resolved, dep, dep.runtime, dep.spec.precision)
            return self._set(LoadedDeployment(dep, "ready", arms, shadow))
        except PlatformError as e:  # reported on the deployment; other deployments keep serving
            log.error("deployment %s failed to load: %s", dep.name, e.message)
            return self._set(LoadedDeployment(dep, "failed", error=e.message))

    def load_all(self) -> None:
        """Load every stored deployment (at start). Each is re-read under the deploy lock, so
        a deploy that lands meanwhile is never overwritten by the older stored state."""
        with self.db.session() as s:
            stored = list_deployments(s)
        with self._lock:
            for dep in stored:
                self._loaded.setdefault(dep.name, LoadedDeployment(dep, "loading"))
        for name in [d.name for d in stored]:
            with self._deploy_lock:
                with self.db.session() as s:
                    try:
                        dep = get_deployment(s, name)
                    except NotFound:  # deleted meanwhile
                        continue
                current = self._loaded.get(name)
                if current is None or current.state == "loading":
                    self.load(dep)
        self.started.set()

    # --- changes ------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        spec: DeploySpec,
        replace: bool = True,
        access: Principal = SYSTEM,
        project: str | None = None,
    ) -> tuple[LoadedDeployment, bool]:
        """Create or update a deployment (as ``access``, in ``project``: see ``resolve``); its
        versions are loaded before anything changes. Returns it and whether it was created."""
        with self._deploy_lock:
            with self.db.session() as s:
                resolved = resolve(s, name, spec, replace, access=access, project=project)
            if spec.runtime is None:
                primary = max(resolved.targets, key=lambda t: t[1])[0]
                spec = spec.model_copy(update={"runtime": default_runtime(primary.manifest)})
            assert spec.runtime is not None
            self._arms(resolved, None, spec.runtime, spec.precision)  # nothing has changed if this fails
            with self.db.session() as s:
                dep, created = deploy(s, name, spec, resolved, replace)
            arms, shadow = self._arms(resolved, dep, spec.runtime, spec.precision)  # warm: no second load
            return self._set(LoadedDeployment(dep, "ready", arms, shadow)), created

    def rollback(self, name: str, access: Principal = SYSTEM) -> LoadedDeployment:
        """Back to the state before the last change (its runtimes are usually still warm)."""
        with self._deploy_lock:
            with self.db.session() as s:
                spec = previous_spec(s, name, access=access)
            entry, _ = self.deploy(name, spec)
            return entry

    def follow_alias(self, model: str, alias: str) -> list[LoadedDeployment]:
        """Redeploy the deployments whose spec names ``alias`` after it moved."""
        with self._deploy_lock:
            with self.db.session() as s:
                affected = following(s, model, alias)
            return [self.deploy(dep.name, dep.spec)[0] for dep in affected]

    def undeploy(self, name: str, access: Principal = SYSTEM) -> None:
        """Delete the deployment from the store, then stop serving it (queued requests finish)."""
        with self._deploy_lock:
            with self.db.session() as s:
                delete_deployment(s, name, access=access)
            with self._lock:
                old = self._loaded.pop(name, None)
            if old is not None:
                self._retire(old)

    # --- serving ------------------------------------------------------------------------

    def get(self, name: str) -> LoadedDeployment:
        entry = self._loaded.get(name)
        if entry is None:
            raise NotFound(f"deployment {name!r} not found")
        return entry

    def serving(self, name: str) -> LoadedDeployment:
        """The ready entry for ``name`` with its batchers started (call on the event loop)."""
        entry = self.get(name)
        if entry.state != "ready" or not entry.arms:
            raise NotReady(
                f"deployment {name!r} is {entry.state}" + (f": {entry.error}" if entry.error else "")
            )
        if not entry.started:
            dep = entry.deployment
            for arm in [*entry.arms, *([entry.shadow] if entry.shadow else [])]:
                engine = getattr(arm.runtime, "engine", None)
                if engine is not None:  # an LLM: the engine reports per deployment
                    engine.observer = self.llm_metrics.observer(dep.name)
                if arm.batcher is None and arm.runtime.batched:
                    arm.metrics = self.metrics.served(dep.name, arm.target.version)
                    arm.batcher = Batcher(arm.runtime, dep.batching, dep.replicas, arm.metrics)
            entry.started = True
        return entry

    @property
    def ready(self) -> bool:
        return self.started.is_set()

    def describe(self, dep: Deployment) -> DeploymentStatus:
        entry = self._loaded.get(dep.name)
        current = entry is not None and entry.deployment.updated_at == dep.updated_at
        state = entry.state if entry is not None and current else "unknown"
        return DeploymentStatus(**dep.model_dump(), state=state, error=entry.error if entry else None)

    def describe_all(self, access: Principal = SYSTEM) -> list[DeploymentStatus]:
        with self.db.session() as s:
            return [self.describe(d) for d in list_deployments(s, access=access)]

    def describe_one(self, name: str, access: Principal = SYSTEM) -> DeploymentStatus:
        with self.db.session() as s:
            return self.describe(get_deployment(s, name, access=access))

    async def close(self) -> None:
        for entry in list(self._loaded.values()):
            for arm in [*entry.arms, *([entry.shadow] if entry.shadow else [])]:
                if arm.batcher is not None:
                    await arm.batcher.close()
