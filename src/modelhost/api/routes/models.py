from __future__ import annotations

from fastapi import APIRouter

from modelhost.api.deps import DB
from modelhost.registry import service

router = APIRouter(prefix="/api/v1/models", tags=["models"])


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
