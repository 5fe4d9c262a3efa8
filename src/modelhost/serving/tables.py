from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from modelhost.db import Base, UTCDateTime, utcnow


class DeploymentRow(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id"), index=True)
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.id"), index=True)
    runtime: Mapped[str] = mapped_column(sa.String(16))
    replicas: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    batching: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, server_default="{}")
    targets: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list, server_default="[]")
    """Resolved traffic split: [{"version_id", "weight"}]; version_id above is the heaviest."""
    shadow_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, server_default="{}")
    """The DeploySpec as asked (aliases unresolved), so an alias move can re-resolve it."""
    previous_spec: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    """The spec before the last change: what rollback restores."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
