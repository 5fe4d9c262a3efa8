from __future__ import annotations

from fastapi import APIRouter, Form, Response, UploadFile
from pydantic import BaseModel

from modelhost.api.auth import changes_require_role
from modelhost.api.deps import DB, AppSettings, Store
from modelhost.datasets import service
from modelhost.datasets.samples import SampleName
from modelhost.errors import PayloadTooLarge

router = APIRouter(
    prefix="/api/v1/datasets", tags=["datasets"], dependencies=[changes_require_role("admin", "member")]
)


@router.get("")
def list_datasets(db: DB) -> list[service.Dataset]:
    with db.session() as s:
        return service.list_datasets(s)


@router.post("", status_code=201)
def upload_dataset(
    db: DB,
    store: Store,
    settings: AppSettings,
    file: UploadFile,
    name: str = Form(),
    target: str | None = Form(None),
    description: str = Form(""),
) -> service.Dataset:
    """Upload a CSV file (multipart field ``file``) as dataset ``name``."""
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload exceeds the {settings.max_upload_bytes} byte limit")
    with db.session() as s:
        return service.create_dataset(
            s, store, name, data, file.filename or "data.csv", target or None, description
        )


class SampleRequest(BaseModel, extra="forbid"):
    name: str | None = None


@router.post("/samples/{sample}", status_code=201)
def create_sample(
    sample: SampleName, db: DB, store: Store, body: SampleRequest | None = None
) -> service.Dataset:
    """Create a dataset from a bundled sample (digits, iris, wine); no network needed."""
    with db.session() as s:
        return service.create_sample_dataset(s, store, sample, body.name if body else None)


@router.get("/{name}")
def show_dataset(name: str, db: DB) -> service.Dataset:
    with db.session() as s:
        return service.get_dataset(s, name)


@router.delete("/{name}", status_code=204)
def delete_dataset(name: str, db: DB, store: Store) -> Response:
    with db.session() as s:
        service.delete_dataset(s, store, name)
    return Response(status_code=204)
