from __future__ import annotations

from fastapi import APIRouter, UploadFile

from modelhost.api.auth import changes_require_role
from modelhost.api.deps import DB, AppSettings, Store
from modelhost.errors import PayloadTooLarge
from modelhost.registry import service
from modelhost.registry.onnx_import import import_onnx

router = APIRouter(
    prefix="/api/v1/models", tags=["models"], dependencies=[changes_require_role("admin", "member")]
)


@router.get("")
def list_models(db: DB) -> list[service.Model]:
    with db.session() as s:
        return service.list_models(s)


@router.get("/{name}")
def show_model(name: str, db: DB) -> service.Model:
    with db.session() as s:
        return service.get_model(s, name)


@router.get("/{name}/versions")
def list_versions(name: str, db: DB) -> list[service.ModelVersion]:
    with db.session() as s:
        return service.list_versions(s, name)


@router.get("/{name}/versions/{number}")
def show_version(name: str, number: int, db: DB) -> service.ModelVersion:
    with db.session() as s:
        return service.get_version(s, name, number)


@router.post("/{name}/import", status_code=201)
def import_version(
    name: str, file: UploadFile, db: DB, store: Store, settings: AppSettings
) -> service.ModelVersion:
    """Register an ONNX file (multipart field ``file``) as the next version of ``name``."""
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload exceeds the {settings.max_upload_bytes} byte limit")
    with db.session() as s:
        return import_onnx(s, store, name, data, file.filename or "model.onnx")
