from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from modelhost.db import Base, UTCDateTime, utcnow


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id"), index=True)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    version_id: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    worker_pid: Mapped[int | None] = mapped_column(sa.Integer)
    # The queue (training/queue.py): which worker holds the run and until when. A run whose
    # lease ran out without a heartbeat goes back to the queue as attempt + 1.
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    worker_id: Mapped[str | None] = mapped_column(sa.String(128))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    step: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total_steps: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (sa.Index("ix_metrics_run_key_step", "run_id", "key", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(64))
    step: Mapped[int] = mapped_column(sa.BigInteger)
    epoch: Mapped[int | None] = mapped_column(sa.Integer)
    value: Mapped[float] = mapped_column(sa.Float)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunLogRow(Base):
    __tablename__ = "run_logs"
    __table_args__ = (sa.Index("ix_run_logs_run_seq", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    line: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SweepRow(Base):
    """A search: its document, the metric that ranks its trials, and each trial's run and
    parameters (fixed when the sweep is created)."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    metric: Mapped[str] = mapped_column(sa.String(64))
    lower_is_better: Mapped[bool] = mapped_column(sa.Boolean)
    trials: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
