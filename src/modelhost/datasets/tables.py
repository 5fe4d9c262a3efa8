from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from modelhost.db import Base, UTCDateTime, utcnow


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    format: Mapped[str] = mapped_column(sa.String(16))
    artifact_key: Mapped[str] = mapped_column(sa.String(512))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    num_rows: Mapped[int] = mapped_column(sa.Integer)
    columns: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    target: Mapped[str | None] = mapped_column(sa.String(128))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
