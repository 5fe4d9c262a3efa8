"""The same platform on the stores a cluster shares: PostgreSQL for metadata and S3 (moto's
server on loopback) for artifacts. The API process and its worker both use them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import S3_CREDENTIALS, fresh_postgres_db
from tests.servers import ADMIN_KEY, start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_lifecycle_on_postgresql_and_s3(tmp_path: Path, postgres_admin, moto_endpoint: str) -> None:
    bucket = f"mh-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **S3_CREDENTIALS)
    s3.create_bucket(Bucket=bucket)
    with fresh_postgres_db(postgres_admin) as db_url:
        server = start_server(
            tmp_path / "home",
            MODELHOST_DATABASE_URL=db_url,
            MODELHOST_ARTIFACTS_URL=f"s3://{bucket}/team",
            MODELHOST_S3_ENDPOINT_URL=moto_endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
                assert http.post("/api/v1/datasets/samples/iris", json={}).status_code == 201
                run_id = http.post("/api/v1/runs", json={"dataset": "iris", "epochs": 40}).json()["id"]
                deadline = time.monotonic() + 120
                while (run := http.get(f"/api/v1/runs/{run_id}").json())["status"] in ("queued", "running"):
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                assert run["status"] == "succeeded", run["error"]
                assert http.put("/api/v1/deployments/iris", json={"model": "iris"}).json()["state"] == "ready"
                flowers = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]  # a setosa and a virginica
                assert http.post("/v1/models/iris:predict", json={"instances": flowers}).json()[
                    "predictions"
                ] == [0, 2]
        finally:
            server.stop()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="team/")["Contents"]]
        assert any(k.startswith("team/datasets/") and k.endswith("/data.csv") for k in keys)
        assert any(k.startswith("team/models/iris/") and k.endswith("/weights.safetensors") for k in keys)
        assert not (tmp_path / "home" / "artifacts").exists()  # nothing fell back to local files
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT status FROM runs")).scalars().all() == ["succeeded"]
            assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
        engine.dispose()
    assert not (tmp_path / "home" / "modelhost.db").exists()
