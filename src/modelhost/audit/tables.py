"""The audit_log table: append-only (triggers in migration 0008 refuse UPDATE and DELETE)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from modelhost.db import Base, UTCDateTime, utcnow

OUTCOMES = ("ok", "denied", "failed")


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (sa.CheckConstraint("outcome IN ('ok', 'denied', 'failed')", name="outcome"),)

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_key_id: Mapped[int | None] = mapped_column(sa.Integer)
    actor: Mapped[str] = mapped_column(sa.String(256), index=True)
    """Who: the key's name and prefix, or the user's name; "anonymous" when nobody was identified."""
    user_id: Mapped[int | None] = mapped_column(sa.Integer)  # no FK: users may be deleted, rows stay
    project_id: Mapped[int | None] = mapped_column(sa.Integer)
    method: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.String(512))
    """The route template (``/api/v1/datasets/{name}``) when routing matched, else the raw path."""
    target: Mapped[str | None] = mapped_column(sa.String(256))
    status: Mapped[int] = mapped_column(sa.Integer)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    client: Mapped[str] = mapped_column(sa.String(128))
    request_id: Mapped[str | None] = mapped_column(sa.String(128))
