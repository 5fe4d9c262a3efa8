"""The Python SDK: every call is one request to the public HTTP API.

Errors come back as the same classes the server raised (``modelhost.errors``), so
``except NotFound`` works the same on both sides of the wire.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from modelhost.config import load_settings
from modelhost.errors import InvalidInput, NotFound, NotReady, PlatformError, Unauthenticated

DEFAULT_URL = "http://127.0.0.1:8000"
_BY_STATUS: dict[int, type[PlatformError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    404: NotFound,
    503: NotReady,
}


def resolve_credentials(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Explicit values first, then MODELHOST_URL / MODELHOST_API_KEY, then the login profile."""
    settings = load_settings()
    profile: dict[str, str] = {}
    if settings.profile_path.is_file():
        profile = json.loads(settings.profile_path.read_text())
    url = url or settings.url or profile.get("url") or DEFAULT_URL
    key = (
        api_key
        or (settings.api_key.get_secret_value() if settings.api_key else None)
        or profile.get("api_key")
    )
    return url.rstrip("/"), key


# What a Hugging Face folder import reads; anything else in the folder (README, ONNX or Flax exports,
# pickled weights) stays home.
FOLDER_SUFFIXES = (".json", ".safetensors", ".jinja")
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@contextlib.contextmanager
def pack_model_folder(folder: Path) -> Iterator[IO[bytes]]:
    """A temporary tar of the folder's JSON, safetensors and Jinja files (subfolders too: a
    sentence-transformers model keeps its pooling config in one), links followed, hidden files left out.

    Raises InvalidInput when the folder has pickled weights but no safetensors, which the server
    would never load.
    """
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not any(p.suffix == ".safetensors" for p in files):
        pickles = [p.name for p in files if p.suffix in PICKLED_WEIGHTS]
        if pickles:
            raise InvalidInput(
                f"{str(folder)!r} has pickled weights ({', '.join(pickles[:3])}) and no *.safetensors; "
                "modelhost never loads pickles: save the model with save_pretrained(safe_serialization=True)"
            )
    with tempfile.TemporaryFile() as out:
        with tarfile.open(fileobj=out, mode="w") as tar:
            for p in files:
                if p.suffix in FOLDER_SUFFIXES:
                    tar.add(p.resolve(), arcname=p.relative_to(folder).as_posix(), recursive=False)
        out.seek(0)
        yield out


def error_from_response(r: httpx.Response) -> PlatformError:
    try:
        err = r.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type")  # OpenAI's error object carries ours in "code"
        cls = PlatformError.by_code.get(str(code), PlatformError)
        return cls(str(err.get("message", r.text)))
    message = err if isinstance(err, str) else f"HTTP {r.status_code}: {r.text[:200]}"
    return _BY_STATUS.get(r.status_code, PlatformError)(message)


def _in(project: str | None) -> dict[str, str] | None:
    """The query parameters that put a new resource in ``project`` (None: the server's default)."""
    return {"project": project} if project else None


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url, api_key = resolve_credentials(url, api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise NotReady(f"cannot reach modelhost at {self.url}: {e}") from e
        if r.is_error:
            raise error_from_response(r)
        return r.json() if r.content else None

    # --- datasets
    def upload_dataset(
        self,
        path: str | Path,
        name: str,
        target: str | None = None,
        format: str | None = None,
        description: str = "",
        project: str | None = None,
    ) -> dict[str, Any]:
        """Upload a CSV, JSONL, NPY, NPZ, text file or image-folder zip/tar as dataset ``name``
        (in ``project``: default the key's). The server tells the format from the file's suffix
        unless ``format`` names it."""
        p = Path(path)
        fields = {"target": target, "format": format, "description": description}
        data = {"name": name, **{k: v for k, v in fields.items() if v}}
        media = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        with p.open("rb") as f:
            upload = {"file": (p.name, f, media)}
            return self._call("POST", "/api/v1/datasets", data=data, files=upload, params=_in(project))  # type: ignore[no-any-return]

    def sample_dataset(
        self, sample: str, name: str | None = None, project: str | None = None
    ) -> dict[str, Any]:
        path = f"/api/v1/datasets/samples/{sample}"
        return self._call("POST", path, json={"name": name}, params=_in(project))  # type: ignore[no-any-return]

    def list_datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/datasets")  # type: ignore[no-any-return]

    def get_dataset(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/datasets/{name}")  # type: ignore[no-any-return]

    def delete_dataset(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/datasets/{name}")

    # --- training runs
    def train(self, spec: dict[str, Any], project: str | None = None) -> dict[str, Any]:
        """Queue a run, in its dataset's project (or ``project``)."""
        return self._call("POST", "/api/v1/runs", json=spec, params=_in(project))  # type: ignore[no-any-return]

    def list_runs(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/runs", params={"status": status} if status else None)  # type: ignore[no-any-return]

    def get_run(self, run_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/runs/{run_id}")  # type: ignore[no-any-return]

    def cancel_run(self, run_id: int) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/runs/{run_id}/cancel")  # type: ignore[no-any-return]

    def run_metrics(self, run_id: int, key: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/runs/{run_id}/metrics", params={"key": key} if key else None)  # type: ignore[no-any-return]

    def run_logs(self, run_id: int, after: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/runs/{run_id}/logs", params={"after": after})  # type: ignore[no-any-return]

    def resume_run(self, run_id: int) -> dict[str, Any]:
        """Continue a cancelled or failed run from its last checkpoint."""
        return self._call("POST", f"/api/v1/runs/{run_id}/resume")  # type: ignore[no-any-return]

    def compare_runs(self, run_ids: list[int]) -> dict[str, Any]:
        return self._call("GET", "/api/v1/runs/compare", params={"ids": run_ids})  # type: ignore[no-any-return]

    def sweep(self, spec: dict[str, Any], project: str | None = None) -> dict[str, Any]:
        """Queue one run per trial of ``spec["sweep"]``; returns ``{"sweep": ..., "runs": [...]}``."""
        return self._call("POST", "/api/v1/sweeps", json=spec, params=_in(project))  # type: ignore[no-any-return]

    def get_sweep(self, sweep_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/sweeps/{sweep_id}")  # type: ignore[no-any-return]

    def list_sweeps(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/sweeps")  # type: ignore[no-any-return]

    def wait_run(self, run_id: int, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the run finishes; returns its final record."""
        deadline = time.monotonic() + timeout
        while (run := self.get_run(run_id))["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(poll)
        return run

    # --- registry
    def list_models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/models")  # type: ignore[no-any-return]

    def get_model(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/models/{name}")  # type: ignore[no-any-return]

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/models/{name}/versions")  # type: ignore[no-any-return]

    def delete_model(self, name: str) -> None:
        """Delete a model with its versions and files (project admins; not while deployed)."""
        self._call("DELETE", f"/api/v1/models/{name}")

    def import_model(
        self, path: str | Path, name: str, timeout: float = 900.0, project: str | None = None
    ) -> dict[str, Any]:
        """Upload an ONNX file, a GGUF file, or a Hugging Face model folder (packed here as a tar of
        the files the import reads) as the next version of model ``name``; returns the version.

        ``timeout`` covers the server's conversion too (a GGUF is dequantised during the request).
        """
        p = Path(path)
        with contextlib.ExitStack() as stack:
            if p.is_dir():
                upload, filename = stack.enter_context(pack_model_folder(p)), f"{p.name or 'model'}.tar"
            else:
                upload, filename = stack.enter_context(p.open("rb")), p.name
            files = {"file": (filename, upload, "application/octet-stream")}
            path = f"/api/v1/models/{name}/import"
            return self._call("POST", path, files=files, timeout=timeout, params=_in(project))  # type: ignore[no-any-return]

    # --- language models (the OpenAI-compatible routes)
    def chat_stream(self, model: str, messages: list[dict[str, str]], **params: Any) -> Iterator[str]:
        """The assistant's reply to ``messages``, piece by piece as the server generates it."""
        body = {"model": model, "messages": messages, "stream": True, **params}
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.is_error:
                    r.read()
                    raise error_from_response(r)
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        raise PlatformError(event["error"].get("message", "generation failed"))
                    for choice in event.get("choices", []):
                        if choice.get("delta", {}).get("content"):
                            yield choice["delta"]["content"]
        except httpx.TransportError as e:
            raise NotReady(f"cannot reach modelhost at {self.url}: {e}") from e

    # --- deployments and inference
    def deploy(
        self,
        name: str,
        model: str,
        version: int | str | None = None,
        project: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Create or update ``name`` (in the model's project). ``version`` is a number or an alias
        (latest when None); ``options`` are the other DeploySpec fields: traffic, shadow, runtime,
        replicas, batching."""
        body = {"model": model, "version": version, **options}
        return self._call("PUT", f"/api/v1/deployments/{name}", json=body, params=_in(project))  # type: ignore[no-any-return]

    def rollback(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/deployments/{name}/rollback")  # type: ignore[no-any-return]

    def set_alias(self, model: str, alias: str, version: int) -> dict[str, int]:
        return self._call("PUT", f"/api/v1/models/{model}/aliases/{alias}", json={"version": version})  # type: ignore[no-any-return]

    def list_deployments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/deployments")  # type: ignore[no-any-return]

    def get_deployment(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/deployments/{name}")  # type: ignore[no-any-return]

    def delete_deployment(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/deployments/{name}")

    def predict(self, name: str, instances: list[Any]) -> list[Any]:
        return self._call("POST", f"/v1/models/{name}:predict", json={"instances": instances})["predictions"]  # type: ignore[no-any-return]

    # --- keys
    def create_key(self, name: str, role: str = "member", **scope: Any) -> dict[str, Any]:
        """A new key (its secret is in the answer, once). ``scope``: ``project`` ("*": every
        project), ``deployment`` (inference only), ``expires_at``, ``rate_limit_rps``,
        ``tokens_per_min``, ``tokens_total``."""
        body = {"name": name, "role": role, **{k: v for k, v in scope.items() if v is not None}}
        if hasattr(body.get("expires_at"), "isoformat"):
            body["expires_at"] = body["expires_at"].isoformat()
        return self._call("POST", "/api/v1/keys", json=body)  # type: ignore[no-any-return]

    def list_keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/keys")  # type: ignore[no-any-return]

    def revoke_key(self, key_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v1/keys/{key_id}")  # type: ignore[no-any-return]

    # --- users and projects
    def login(self, username: str, password: str, project: str | None = None) -> dict[str, Any]:
        """Sign in: a new key of that user for 12 hours (no key needed to call this)."""
        body = {"username": username, "password": password, "project": project}
        return self._call("POST", "/api/v1/login", json=body)  # type: ignore[no-any-return]

    def create_user(self, name: str, password: str, admin: bool = False) -> dict[str, Any]:
        body = {"name": name, "password": password, "admin": admin}
        return self._call("POST", "/api/v1/users", json=body)  # type: ignore[no-any-return]

    def list_users(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/users")  # type: ignore[no-any-return]

    def disable_user(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/users/{name}/disable")  # type: ignore[no-any-return]

    def create_project(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/api/v1/projects", json={"name": name})  # type: ignore[no-any-return]

    def list_projects(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/v1/projects")  # type: ignore[no-any-return]

    def get_project(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/projects/{name}")  # type: ignore[no-any-return]

    def delete_project(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/projects/{name}")

    def list_members(self, project: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/projects/{project}/members")  # type: ignore[no-any-return]

    def set_member(self, project: str, user: str, role: str) -> dict[str, Any]:
        path = f"/api/v1/projects/{project}/members/{user}"
        return self._call("PUT", path, json={"role": role})  # type: ignore[no-any-return]

    def remove_member(self, project: str, user: str) -> None:
        self._call("DELETE", f"/api/v1/projects/{project}/members/{user}")

    def ready(self) -> bool:
        try:
            return self._http.get("/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    # --- audit
    def audit(self, **filters: Any) -> dict[str, Any]:
        """One page of the audit log (admin): ``since``, ``until``, ``actor``, ``action``, ``outcome``,
        ``limit``, ``cursor``; returns ``{"entries": [...], "next_cursor": int | None}``."""
        params = {k: v for k, v in filters.items() if v is not None}
        params.update({k: v.isoformat() for k, v in params.items() if hasattr(v, "isoformat")})
        return self._call("GET", "/api/v1/audit", params=params)  # type: ignore[no-any-return]
