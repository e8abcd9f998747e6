"""ECS logs of real processes on the private libvirtd with the tiny guest: the CLI doing real
actions with ``--log-json -v`` (and VIRTKIT_LOG_FORMAT=ecs), and ``virtkit serve`` with
VIRTKIT_LOG_FORMAT=ecs answering a few requests; every line they log is checked as ECS
(``ecs_document`` in tests/unit/ecsdocs.py). Whatever a test makes is named vkecs-*."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VIRTKIT, Bed, run_cli, tiny_spec
from tests.integration.apiserver import Server
from tests.unit.ecsdocs import ecs_document, field
from virtkit.actionlog import host_name
from virtkit.errors import NotFound
from virtkit.specs import parse_vm_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def vm(bed: Bed) -> Iterator[str]:
    """A shut-off tiny guest, removed after the test."""
    from virtkit.services import storage

    name = "vkecs-" + secrets.token_hex(3)
    with bed.client() as vk:
        storage.ensure_pool(vk.host, bed.settings.storage_pool, bed.pool_dir)
        vk.vms.create(parse_vm_spec(tiny_spec(bed, name)))
    yield name
    with bed.client() as vk, contextlib.suppress(NotFound):
        vk.vms.delete(name, force=True, remove_storage=True)


def run_cli_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIRTKIT, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def ecs_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "nothing was logged"
    return [ecs_document(line) for line in lines]


def test_the_cli_logs_real_actions_as_ecs(bed: Bed, vm: str) -> None:
    started = run_cli(bed, "--log-json", "-v", "vm", "start", vm)
    assert started.returncode == 0, started.stderr
    docs = ecs_lines(started.stderr)  # every line on stderr
    (start,) = [d for d in docs if field(d, "event.action") == "vm.start"]
    assert field(start, "event.outcome") == "success"
    assert field(start, "virtkit.vm") == vm and field(start, "host.name") == host_name(bed.uri)
    assert isinstance(field(start, "event.duration"), int) and field(start, "event.duration") > 0

    env = {**bed.env(), "VIRTKIT_LOG_FORMAT": "ecs"}
    again = run_cli_env(env, "-v", "vm", "start", vm)  # it runs: the caller's mistake
    assert again.returncode == 1
    docs = ecs_lines(again.stderr)
    (failed,) = [d for d in docs if field(d, "event.action") == "vm.start"]
    assert field(failed, "event.outcome") == "failure"
    assert field(failed, "error.code") == "vm_running"
    assert docs[-1]["log.level"] == "error" and field(docs[-1], "error.code") == "vm_running"

    stopped = run_cli_env(env, "-v", "vm", "stop", "--force", vm)
    assert stopped.returncode == 0, stopped.stderr
    (stop,) = [d for d in ecs_lines(stopped.stderr) if field(d, "event.action") == "vm.stop"]
    assert field(stop, "event.outcome") == "success"


class EcsServer(Server):
    def env(self) -> dict[str, str]:
        return {**super().env(), "VIRTKIT_LOG_FORMAT": "ecs"}


def test_serve_logs_every_line_as_ecs(bed: Bed, vm: str, tmp_path: Path) -> None:
    server = EcsServer(bed, tmp_path / "state")
    server.start()
    try:
        server.add_user("vkecs-ada", "admin")
        with server.client("vkecs-ada") as ada, server.client() as anon:
            assert ada.get("/api/v1/vms").status_code == 200
            assert ada.post(f"/api/v1/vms/{vm}/start").status_code == 200
            assert ada.post(f"/api/v1/vms/{vm}/stop").status_code == 200
            assert ada.get("/api/v1/vms/vkecs-nosuch").status_code == 404
            assert anon.get("/api/v1/vms").status_code == 401
    finally:
        server.stop()
    assert server.log is not None
    lines = server.log.read_text().splitlines()
    # stdout shares the file: its one line, the banner, is no log record
    banner = [line for line in lines if line.startswith("virtkit API on ")]
    assert len(banner) == 1, lines
    docs = [ecs_document(line) for line in lines if line not in banner]

    loggers = {field(d, "log.logger") for d in docs}
    assert "uvicorn.error" in loggers  # uvicorn's own records, through the same formatter
    access = [d for d in docs if field(d, "event.action") == "http.request"]
    seen = [
        (
            field(d, "http.request.method"),
            field(d, "url.path"),
            field(d, "http.response.status_code"),
        )
        for d in access
        if field(d, "url.path") != "/healthz"  # the start-up's readiness checks
    ]
    # a request's record is written once its answer is out: the client may send the next
    # request first, so the records' order is not the requests' order
    assert sorted(seen) == sorted([
        ("GET", "/api/v1/vms", 200),
        ("POST", f"/api/v1/vms/{vm}/start", 200),
        ("POST", f"/api/v1/vms/{vm}/stop", 200),
        ("GET", "/api/v1/vms/vkecs-nosuch", 404),
        ("GET", "/api/v1/vms", 401),
    ])  # fmt: skip
    users = [field(d, "user.name") for d in access if field(d, "url.path") != "/healthz"]
    assert sorted(users, key=str) == sorted(["vkecs-ada"] * 4 + [None], key=str)
    for action in ("vm.start", "vm.stop"):
        (doc,) = [d for d in docs if field(d, "event.action") == action]
        assert field(doc, "event.outcome") == "success" and field(doc, "virtkit.vm") == vm
        assert field(doc, "host.name") == host_name(bed.uri)
        (request,) = [d for d in access if field(d, "url.path").endswith(action[3:])]
        assert field(doc, "http.request.id") == field(request, "http.request.id")
