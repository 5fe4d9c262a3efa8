"""Secure and honest defaults: loopback bind, secrets kept from workers, failures recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.config import Settings, child_env
from modelhost.datasets.formats import parse_csv
from modelhost.db import Database
from modelhost.errors import InvalidInput, NotReady
from modelhost.registry.manifest import Signature, TensorSpec
from modelhost.serving.inputs import instances_to_array
from modelhost.training.executor import LocalExecutor
from modelhost.training.service import get_logs, get_run
from modelhost.training.spec import parse_spec


def test_the_server_binds_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELHOST_HOST", raising=False)
    assert Settings().host == "127.0.0.1"


def test_workers_never_see_the_api_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELHOST_ADMIN_KEY", "a" * 40)
    monkeypatch.setenv("MODELHOST_API_KEY", "b" * 40)
    env = child_env(Settings(home=tmp_path))
    assert "MODELHOST_ADMIN_KEY" not in env and "MODELHOST_API_KEY" not in env
    assert env["MODELHOST_HOME"] == str(tmp_path.resolve())


def test_a_worker_that_cannot_start_fails_its_run(tmp_path: Path) -> None:
    from modelhost.artifacts import open_artifacts
    from modelhost.datasets.service import create_sample_dataset

    settings = Settings(home=tmp_path, python=str(tmp_path / "no-such-python"))
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.session() as s:
        create_sample_dataset(s, open_artifacts(settings.resolved_artifacts_url), "iris")
    with pytest.raises(NotReady, match="could not start a training worker for run 1"):
        LocalExecutor(settings, db).submit(parse_spec({"dataset": "iris"}))
    with db.session() as s:
        run = get_run(s, 1)
        assert run.status == "failed" and run.error.startswith("could not start a training worker")
        assert get_logs(s, 1) == []
    db.dispose()


def test_non_finite_and_overlong_csv_cells_are_named() -> None:
    with pytest.raises(InvalidInput, match="line 3, column 'b': 'inf' is not a finite number"):
        parse_csv(b"a,b\n1,2\n3,inf\n")
    with pytest.raises(InvalidInput, match="is longer than 128 characters"):
        parse_csv(("x" * 200 + ",y\n1,2\n").encode())


def test_numbers_too_big_for_float32_are_refused() -> None:
    sig = Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 2])], outputs=[])
    for may_hold_bools in (True, False):
        with pytest.raises(InvalidInput, match="NaN or infinity"):
            instances_to_array([[1e39, 1.0]], sig, 10, may_hold_bools=may_hold_bools)


@pytest.mark.parametrize(
    ("value", "hosts"),
    [("a.example, b.example", ["a.example", "b.example"]), ('["x.example"]', ["x.example"]), ("", None)],
)
def test_allowed_hosts_read_comma_separated_or_json(monkeypatch, value, hosts) -> None:
    monkeypatch.setenv("MODELHOST_ALLOWED_HOSTS", value)
    monkeypatch.setenv("MODELHOST_ALLOWED_ORIGINS", "https://ui.example, http://localhost:3000")
    s = Settings()
    assert s.allowed_hosts == hosts  # empty: the default (loopback names and the bound address)
    assert s.allowed_origins == ["https://ui.example", "http://localhost:3000"]
