"""The model registry: models, and immutable numbered versions stored as a directory of
``modelhost.json`` + the model's files (``weights.safetensors``, or an imported
``model.onnx``) in the artifact store."""

from __future__ import annotations

import datetime as dt
import functools
import uuid

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.auth.authz import SYSTEM, Action, Principal, only_visible, require
from modelhost.auth.projects import project_name, target_project
from modelhost.db import after_commit, on_rollback
from modelhost.errors import AlreadyExists, Conflict, NotFound
from modelhost.names import check_name
from modelhost.registry.manifest import MANIFEST_FILE, Manifest
from modelhost.registry.tables import ModelRow, ModelVersionRow


class Model(BaseModel):
    id: int
    name: str
    project: str
    task: str
    description: str
    created_at: dt.datetime
    latest_version: int | None = None


class ModelVersion(BaseModel):
    id: int
    model: str
    model_id: int
    number: int
    files: dict[str, str]
    manifest: Manifest
    run_id: int | None
    dataset_id: int | None
    created_at: dt.datetime


def _version(row: ModelVersionRow, model: str) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        model=model,
        model_id=row.model_id,
        number=row.number,
        files=row.files,
        manifest=Manifest.model_validate(row.manifest),
        run_id=row.run_id,
        dataset_id=row.dataset_id,
        created_at=row.created_at,
    )


def _latest_number(s: Session, model_id: int) -> int | None:
    return s.scalar(
        sa.select(sa.func.max(ModelVersionRow.number)).where(ModelVersionRow.model_id == model_id)
    )


def _model(s: Session, row: ModelRow) -> Model:
    return Model(
        id=row.id,
        name=row.name,
        project=project_name(s, row.project_id),
        task=row.task,
        description=row.description,
        created_at=row.created_at,
        latest_version=_latest_number(s, row.id),
    )


def _model_row(s: Session, name: str, access: Principal = SYSTEM, action: Action = "read") -> ModelRow:
    """The model ``name`` if ``access`` may do ``action`` on it (NotFound if it may not see it)."""
    row = s.scalar(sa.select(ModelRow).where(ModelRow.name == name))
    if row is None:
        raise NotFound(f"model {name!r} not found")
    require(access, row.project_id, action, f"model {name!r}")
    return row


def check_model_project(s: Session, name: str, project_id: int, access: Principal) -> None:
    """Versions of model ``name`` may go into ``project_id`` by ``access``: the model is new,
    or lives there and ``access`` may write to it. (Names are global, so a name taken in
    another project is refused as taken.)"""
    row = s.scalar(sa.select(ModelRow).where(ModelRow.name == name))
    if row is None:
        return
    if row.project_id != project_id or access.role_in(row.project_id) is None:
        raise AlreadyExists(f"the name {name!r} is taken by a model of another project")
    require(access, row.project_id, "write", f"model {name!r}")


def _home(s: Session, name: str, access: Principal, project: str | None, run_id: int | None) -> int:
    """The project a version of ``name`` goes into: the model's, else the one named, else
    its run's, else the caller's (see ``target_project``)."""
    from modelhost.training.tables import RunRow

    existing = s.scalar(sa.select(ModelRow.project_id).where(ModelRow.name == name))
    run = s.get(RunRow, run_id) if run_id is not None else None
    parent = run.project_id if run is not None else None
    if existing is not None and project is None and parent is None:
        parent = existing if access.role_in(existing) is not None else None
    project_id = target_project(s, access, project, parent)
    check_model_project(s, name, project_id, access)
    return project_id


_REGISTRANT = "modelhost.registry.registrant"


def register_as(s: Session, model: str, access: Principal, project: str | None) -> None:
    """Check that ``access`` may add versions of ``model`` (to ``project``), and make the
    registrations of this unit of work act so: for importers, which call
    :func:`register_version` themselves once the upload is parsed."""
    check_name("model", model)
    _home(s, model, access, project, None)
    s.info[_REGISTRANT] = (access, project)


def _get_or_create_model(s: Session, name: str, task: str, project_id: int) -> ModelRow:
    row = s.scalar(sa.select(ModelRow).where(ModelRow.name == name))
    if row is None:
        try:
            with s.begin_nested():
                row = ModelRow(name=name, task=task, project_id=project_id)
                s.add(row)
        except IntegrityError:  # created concurrently: use theirs
            row = _model_row(s, name)
    if row.project_id != project_id:
        raise AlreadyExists(f"the name {name!r} is taken by a model of another project")
    if row.task != task:
        raise Conflict(f"model {name!r} is a {row.task} model; this version is {task}")
    return row


def register_version(
    s: Session,
    store: ArtifactStore,
    model: str,
    manifest: Manifest,
    files: dict[str, bytes],
    run_id: int | None = None,
    dataset_id: int | None = None,
    *,
    access: Principal = SYSTEM,
    project: str | None = None,
) -> ModelVersion:
    """Store the version's files (``modelhost.json`` from ``manifest``, then ``files``, e.g.
    ``{WEIGHTS_FILE: ...}``), then record it under the next free number.

    Files go to a fresh prefix, so a failed or raced registration never overwrites another
    version's bytes; on failure the prefix is removed. A new model goes into ``project``
    (default: its run's, else the caller's); an existing one keeps its own.
    """
    check_name("model", model)
    assert MANIFEST_FILE not in files, "modelhost.json is written from `manifest`"
    if access is SYSTEM and project is None:
        access, project = s.info.get(_REGISTRANT, (SYSTEM, None))
    model_row = _get_or_create_model(s, model, manifest.task, _home(s, model, access, project, run_id))
    prefix = f"models/{model}/{uuid.uuid4().hex}/"
    on_rollback(s, lambda: store.delete_prefix(prefix))  # no bytes outlive a registration that did not land
    digests = {MANIFEST_FILE: store.put(prefix + MANIFEST_FILE, manifest.to_bytes()).sha256}
    for name, data in files.items():
        digests[name] = store.put(prefix + name, data).sha256
    for _attempt in range(5):
        row = ModelVersionRow(
            model_id=model_row.id,
            number=(_latest_number(s, model_row.id) or 0) + 1,
            artifact_prefix=prefix,
            files=digests,
            manifest=manifest.model_dump(mode="json"),
            run_id=run_id,
            dataset_id=dataset_id,
        )
        try:
            with s.begin_nested():
                s.add(row)
            return _version(row, model)
        except IntegrityError:  # another registration took this number; take the next
            continue
    raise Conflict(f"could not allocate a version number for {model!r}; retry")


def list_models(s: Session, *, access: Principal = SYSTEM) -> list[Model]:
    q = only_visible(sa.select(ModelRow).order_by(ModelRow.id), ModelRow.project_id, access)
    return [_model(s, r) for r in s.scalars(q)]


def get_model(s: Session, name: str, *, access: Principal = SYSTEM, action: Action = "read") -> Model:
    return _model(s, _model_row(s, name, access, action))


def list_versions(s: Session, model: str, *, access: Principal = SYSTEM) -> list[ModelVersion]:
    row = _model_row(s, model, access)
    q = sa.select(ModelVersionRow).where(ModelVersionRow.model_id == row.id).order_by(ModelVersionRow.number)
    return [_version(v, model) for v in s.scalars(q)]


def get_version(
    s: Session, model: str, number: int | None = None, *, access: Principal = SYSTEM
) -> ModelVersion:
    """A version by number, or the latest when ``number`` is None."""
    row = _model_row(s, model, access)
    number = number if number is not None else _latest_number(s, row.id)
    v = s.scalar(
        sa.select(ModelVersionRow).where(ModelVersionRow.model_id == row.id, ModelVersionRow.number == number)
    )
    if v is None:
        raise NotFound(
            f"model {model!r} has no version {number}" if number else f"model {model!r} has no versions"
        )
    return _version(v, model)


def get_version_by_id(s: Session, version_id: int, *, access: Principal = SYSTEM) -> ModelVersion:
    v = s.get(ModelVersionRow, version_id)
    if v is None:
        raise NotFound(f"model version {version_id} not found")
    model = s.get_one(ModelRow, v.model_id)
    require(access, model.project_id, "read", f"model version {version_id}")
    return _version(v, model.name)


def read_version_file(s: Session, store: ArtifactStore, version: ModelVersion, name: str) -> bytes:
    """One file of the version directory, verified against the sha256 recorded for it."""
    row = s.get_one(ModelVersionRow, version.id)
    if name not in row.files:
        raise NotFound(f"model {version.model!r} version {version.number} has no file {name!r}")
    return store.get(row.artifact_prefix + name, expected_sha256=row.files[name])


def delete_model(s: Session, store: ArtifactStore, name: str, *, access: Principal = SYSTEM) -> None:
    """Delete a model with its versions and aliases, then their files (project admins only);
    refused while a deployment serves it."""
    row = _model_row(s, name, access, "delete")
    prefixes = list(
        s.scalars(sa.select(ModelVersionRow.artifact_prefix).where(ModelVersionRow.model_id == row.id))
    )
    try:
        with s.begin_nested():
            s.execute(sa.delete(ModelVersionRow).where(ModelVersionRow.model_id == row.id))
            s.delete(row)
    except IntegrityError as e:
        raise Conflict(f"model {name!r} is served by deployments; delete those first") from e
    for prefix in prefixes:
        after_commit(s, functools.partial(store.delete_prefix, prefix))
