"""A running ``virtkit serve`` on the private test libvirtd, with users of each role, for the
API tests (httpx against the real service)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import VIRTKIT, Bed

PASSWORD = "correct horse battery"
# The source of this checkout, first on the server's path (the venv's script may be installed
# from another checkout).
SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    bed: Bed
    state_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    uri: str | None = None  # another way to the same daemon (qemu+ssh://...), else the bed's

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**self.bed.env(), "VIRTKIT_STATE_DIR": str(self.state_dir)}
        if self.uri:
            env["VIRTKIT_URI"] = self.uri
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
        return env

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VIRTKIT, *args], env=self.env(), capture_output=True, text=True, input=input,
            timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        self.log = self.state_dir / f"serve-{self.port}.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 -- the server's lifetime, closed in stop()
        self.proc = subprocess.Popen(
            [VIRTKIT, "-v", "serve", "--port", str(self.port)],
            env=self.env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"virtkit serve exited:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"virtkit serve did not answer:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # the process this fixture started
                self.proc.wait()
        self.proc = None

    def add_user(self, name: str, role: str) -> str:
        """A user with ``PASSWORD`` and an API token; returns the token."""
        added = self.cli("user", "add", name, "--role", role, "--password-stdin", input=PASSWORD)
        assert added.returncode == 0, added.stderr
        made = self.cli("user", "token", "create", name, "--name", "tests")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1]
        self.tokens[name] = token
        return token

    def client(self, user: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextlib.contextmanager
def running(bed: Bed, state_dir: Path) -> Iterator[Server]:
    server = Server(bed, state_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if server.log is not None and os.environ.get("VIRTKIT_TEST_SHOW_SERVER_LOG"):
            print(server.log.read_text())


def wait_task(client: httpx.Client, task_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/api/v1/tasks/{task_id}", params={"wait": 5}).json()
        if task["state"] in ("succeeded", "failed"):
            return dict(task)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s")
