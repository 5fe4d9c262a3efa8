from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response, UploadFile
from sqlalchemy.orm import Session

from modelhost.api.auth import Caller, changes_require_role
from modelhost.api.deps import DB, AppSettings, ProjectParam, Store
from modelhost.artifacts import ArtifactStore
from modelhost.errors import InvalidInput, PayloadTooLarge, UnsafeContent
from modelhost.registry import service
from modelhost.registry.onnx_import import import_onnx

Importer = Callable[[Session, ArtifactStore, str, bytes, str], service.ModelVersion]
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill")

router = APIRouter(
    prefix="/api/v1/models", tags=["models"], dependencies=[changes_require_role("admin", "member")]
)


@router.get("")
def list_models(db: DB, caller: Caller) -> list[service.Model]:
    with db.session() as s:
        return service.list_models(s, access=caller)


@router.get("/{name}")
def show_model(name: str, db: DB, caller: Caller) -> service.Model:
    with db.session() as s:
        return service.get_model(s, name, access=caller)


@router.delete("/{name}", status_code=204)
def delete_model(name: str, db: DB, store: Store, caller: Caller) -> Response:
    """Delete a model, its versions, aliases and files (project admins; not while deployed)."""
    with db.session() as s:
        service.delete_model(s, store, name, access=caller)
    return Response(status_code=204)


@router.get("/{name}/versions")
def list_versions(name: str, db: DB, caller: Caller) -> list[service.ModelVersion]:
    with db.session() as s:
        return service.list_versions(s, name, access=caller)


@router.get("/{name}/versions/{number}")
def show_version(name: str, number: int, db: DB, caller: Caller) -> service.ModelVersion:
    with db.session() as s:
        return service.get_version(s, name, number, access=caller)


@router.post("/{name}/import", status_code=201)
def import_version(
    name: str,
    file: UploadFile,
    db: DB,
    store: Store,
    settings: AppSettings,
    caller: Caller,
    project: ProjectParam = None,
) -> service.ModelVersion:
    """Register an uploaded model (multipart field ``file``) as the next version of ``name``: an ONNX
    file, a GGUF file, or a Hugging Face model folder as a zip or tar, told apart by the file's name."""
    filename = file.filename or "model.onnx"
    importer = _importer(filename)
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload exceeds the {settings.max_upload_bytes} byte limit")
    with db.session() as s:
        service.register_as(s, name, caller, project)
        return importer(s, store, name, data, filename)


def _importer(filename: str) -> Importer:
    # imported here: they load torch, which the API process otherwise never needs
    lower = filename.lower()
    if lower.endswith(".gguf"):
        from modelhost.registry.gguf_import import import_gguf

        return import_gguf
    if lower.endswith(ARCHIVES):
        from modelhost.registry.hf_import import import_hf

        return import_hf
    if lower.endswith(".onnx") or "." not in lower:
        return import_onnx
    if lower.endswith(PICKLES):
        raise UnsafeContent(
            f"{filename!r} is a pickle; modelhost never loads pickles. Import ONNX, GGUF, or a Hugging Face "
            "folder with safetensors weights"
        )
    raise InvalidInput(
        f"{filename!r}: import takes an .onnx file, a .gguf file, or a Hugging Face model folder "
        f"packed as {', '.join(ARCHIVES)}"
    )
