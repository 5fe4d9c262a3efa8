"""Start the real modelhost server as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_KEY = "mh_test_admin_key_0123456789abcdefghijklmnopqrstuvwxyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    home: Path
    proc: subprocess.Popen
    log: Path
    env: dict[str, str]

    def stop(self) -> None:
        """Cancel runs still going (their workers outlive the server by design), then stop."""
        if self.proc.poll() is None:
            auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
            try:
                for run in httpx.get(self.url + "/api/v1/runs", headers=auth, timeout=10).json():
                    if run["status"] in ("queued", "running"):
                        httpx.post(self.url + f"/api/v1/runs/{run['id']}/cancel", headers=auth, timeout=10)
            except (httpx.HTTPError, ValueError, TypeError):
                pass  # a server that no longer answers has nothing to cancel through
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env.update(MODELHOST_HOME=str(home), MODELHOST_ADMIN_KEY=ADMIN_KEY, **extra)
    return env


def start_server(home: Path, timeout: float = 60.0, **extra_env: str) -> Server:
    """Run `modelhost up` and poll /v2/health/ready (never sleep a fixed time)."""
    port = free_port()
    env = server_env(home, **extra_env)
    log = home.parent / f"server-{port}.log"
    cmd = [sys.executable, "-m", "modelhost.cli", "up", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return Server(url, home, proc, log, env)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")
