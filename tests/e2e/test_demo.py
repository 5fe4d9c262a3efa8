"""`modelhost up --demo` (what `make run` starts): first start trains, registers and deploys
the digits demo and prints a key and a curl line that works; a restart keeps all of it."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, server_env

pytestmark = pytest.mark.slow


class Up:
    def __init__(self, home: Path, port: int) -> None:
        env = server_env(home)
        env.pop("MODELHOST_ADMIN_KEY")  # a new home gets a random key, printed once
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelhost.cli", "up", "--demo", "--port", str(port)],
            env={**env, "COLUMNS": "400"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        self.seen: list[str] = []

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, "\n".join(self.seen)
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.seen))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self.pump.join(timeout=10)  # the pipe is at EOF once the process is gone
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_first_start_deploys_the_demo_and_the_printed_curl_works(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    up = Up(home, port)
    try:
        key = up.wait_for(r"admin API key \(shown once").rsplit(" ", 1)[1]
        assert re.fullmatch(r"mh_[A-Za-z0-9_-]{43}", key)
        curl = up.wait_for(r"^\s+curl ").strip()
        assert f"http://127.0.0.1:{port}/v1/models/digits:predict" in curl
        if shutil.which("curl"):
            out = subprocess.run(
                ["bash", "-c", curl],
                env={"MODELHOST_API_KEY": key, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        else:  # same request without the curl binary
            body = json.loads(re.search(r"-d '(.*)'", curl).group(1))
            out = httpx.post(
                f"http://127.0.0.1:{port}/v1/models/digits:predict",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ).text
        assert json.loads(out)["predictions"] == [0]  # the example is the first digit, a zero
        assert key.encode() not in (home / "modelhost.db").read_bytes()  # stored hashed only
    finally:
        up.stop()

    again = Up(home, port)
    try:
        again.wait_for("modelhost is up")
        assert again.wait_for("admin API key").endswith(
            "the one shown on first start (export MODELHOST_API_KEY=...)"
        )
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 60  # deployments load in the background after the banner
        while httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        runs = httpx.get(f"http://127.0.0.1:{port}/api/v1/runs", headers=headers).json()
        assert len(runs) == 1  # the demo is not trained twice
        dep = httpx.get(f"http://127.0.0.1:{port}/api/v1/deployments/digits", headers=headers).json()
        assert dep["state"] == "ready" and dep["version"] == 1
    finally:
        again.stop()
    assert not any("Traceback" in line for line in up.seen + again.seen)
