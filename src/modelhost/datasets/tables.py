from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from modelhost.db import Base, UTCDateTime, utcnow


class DatasetRow(Base):
    """One uploaded dataset. The bytes live in the artifact store under ``artifact_key``.

    ``kind`` says what loading gives (table, arrays, images, text). ``columns`` holds a
    table's typed columns (empty for the other kinds); ``summary`` holds the other kinds'
    description (array shapes, classes, character counts) and is ``{}`` for tables.
    ``num_rows`` counts examples: rows, first-dimension entries, images or text lines.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16), default="table", server_default="table")
    format: Mapped[str] = mapped_column(sa.String(16))
    artifact_key: Mapped[str] = mapped_column(sa.String(512))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    num_rows: Mapped[int] = mapped_column(sa.Integer)
    columns: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, server_default="{}")
    target: Mapped[str | None] = mapped_column(sa.String(128))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
