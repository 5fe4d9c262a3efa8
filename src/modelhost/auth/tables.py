from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from modelhost.db import Base, UTCDateTime, utcnow


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    prefix: Mapped[str] = mapped_column(sa.String(32))
    """The visible start of the key, shown in listings to tell keys apart."""
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    """sha256 of the whole key (keys carry 256 random bits, so a fast hash is enough)."""
    role: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
