from __future__ import annotations

from fastapi import APIRouter, Form, Response, UploadFile
from pydantic import BaseModel

from modelhost.api.auth import Caller, changes_require_role
from modelhost.api.deps import DB, AppSettings, ProjectParam, Store
from modelhost.datasets import service
from modelhost.datasets.formats import FORMATS
from modelhost.datasets.samples import SampleName
from modelhost.errors import InvalidInput, PayloadTooLarge

MAX_FILENAME = 255  # filenames only name the format and appear in messages; they never reach a disk

router = APIRouter(
    prefix="/api/v1/datasets", tags=["datasets"], dependencies=[changes_require_role("admin", "member")]
)


@router.get("")
def list_datasets(db: DB, caller: Caller) -> list[service.Dataset]:
    with db.session() as s:
        return service.list_datasets(s, access=caller)


@router.post("", status_code=201)
def upload_dataset(
    db: DB,
    store: Store,
    settings: AppSettings,
    caller: Caller,
    file: UploadFile,
    project: ProjectParam = None,
    name: str = Form(),
    target: str | None = Form(None),
    description: str = Form(""),
    format: str | None = Form(None, description=f"One of {', '.join(FORMATS)}; default from the suffix."),
) -> service.Dataset:
    """Upload a dataset file (multipart field ``file``) as dataset ``name``: CSV, JSONL, NPY,
    NPZ, UTF-8 text, or a zip/tar of one folder of PNG/JPEG images per class."""
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload exceeds the {settings.max_upload_bytes} byte limit")
    filename = file.filename or "data.csv"
    if len(filename) > MAX_FILENAME:
        raise InvalidInput(f"file: the filename is longer than {MAX_FILENAME} characters")
    with db.session() as s:
        return service.create_dataset(
            s,
            store,
            name,
            data,
            filename,
            target or None,
            description,
            format or None,
            access=caller,
            project=project,
        )


class SampleRequest(BaseModel, extra="forbid"):
    name: str | None = None


@router.post("/samples/{sample}", status_code=201)
def create_sample(
    sample: SampleName,
    db: DB,
    store: Store,
    caller: Caller,
    body: SampleRequest | None = None,
    project: ProjectParam = None,
) -> service.Dataset:
    """Create a dataset from a bundled sample, no network needed: the tables digits, iris, wine
    and breast_cancer; digits_images (8x8 PNGs, a folder per digit); classics (English text)."""
    with db.session() as s:
        name = body.name if body else None
        return service.create_sample_dataset(s, store, sample, name, access=caller, project=project)


@router.get("/{name}")
def show_dataset(name: str, db: DB, caller: Caller) -> service.Dataset:
    with db.session() as s:
        return service.get_dataset(s, name, access=caller)


@router.delete("/{name}", status_code=204)
def delete_dataset(name: str, db: DB, store: Store, caller: Caller) -> Response:
    """Project admins only."""
    with db.session() as s:
        service.delete_dataset(s, store, name, access=caller)
    return Response(status_code=204)
