"""ECS logs (docs/monitoring.md): the entry points' set-up (cli/logs.py) writes every record as
one ECS JSON document through ecs-logging; actions log their outcome and duration
(``virtkit.actionlog``), a task's records carry the task, the API logs each request.

Every line is checked by ``ecs_document`` (tests/unit/ecsdocs.py): JSON, ``@timestamp``,
``log.level``, ``ecs.version``, dotted names nested as ecs-logging nests them. Actions run on
libvirt's test driver (a per-test node file); whatever a test makes is named vkecs-*.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.apiclients import token_clients
from tests.unit.ecsdocs import ecs_document, field
from virtkit import Client, Settings
from virtkit.actionlog import host_name, log_context, logged_action
from virtkit.cli import logs
from virtkit.cli.state import State
from virtkit.errors import InvalidState, NotFound
from virtkit.services.store import Store
from virtkit.services.tasks import TaskHandle, TaskRunner

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
SRC = str(Path(__file__).resolve().parents[2] / "src")

NODE = """<node>
  <domain type='test'>
    <name>vkecs-on</name>
    <memory unit='MiB'>128</memory>
    <os><type>hvm</type></os>
  </domain>
  <domain type='test'>
    <name>vkecs-off</name>
    <memory unit='MiB'>128</memory>
    <os><type>hvm</type></os>
  </domain>
</node>"""


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def docs(self) -> list[dict[str, Any]]:
        """Every line written so far, each checked as an ECS document."""
        return [ecs_document(line) for line in self.stream.getvalue().splitlines()]

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [d for d in self.docs() if field(d, "event.action") == action]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """The CLI's own set-up (``-v``, ECS) writing to a buffer instead of stderr."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", stream)
    logs.setup_logging(verbose=True, debug=False, log_format="ecs")
    try:
        yield Captured(stream)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.captureWarnings(False)
        monkeypatch.setattr(logs, "_handler", None)
        monkeypatch.setattr(logs, "_format", "text")


@pytest.fixture
def vk(tmp_path: Path) -> Iterator[Client]:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    client = Client(
        settings=Settings(
            uri=f"test://{node}", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state"
        )
    )
    client.vms.stop("vkecs-off")  # the test driver starts every domain of its file
    yield client
    client.close()


def test_vm_actions_log_their_outcome_duration_vm_and_host(vk: Client, captured: Captured) -> None:
    vk.vms.start("vkecs-off")
    vk.vms.pause("vkecs-off")
    vk.vms.resume("vkecs-off")
    vk.vms.stop("vkecs-off")
    docs = captured.docs()
    actions = [field(d, "event.action") for d in docs if field(d, "event.action")]
    assert actions == ["vm.start", "vm.pause", "vm.resume", "vm.stop"]
    start = captured.actions("vm.start")[0]
    assert field(start, "event.outcome") == "success"
    duration = field(start, "event.duration")
    assert isinstance(duration, int) and 0 < duration < 10 * 10**9  # nanoseconds
    assert field(start, "virtkit.vm") == "vkecs-off"
    assert field(start, "host.name") == host_name(vk.uri) and host_name(vk.uri)
    assert field(start, "log.logger") == "virtkit.services.vms"
    assert field(start, "log.origin.function") == "start"  # the service, not the helper
    assert start["message"].startswith("vm.start vkecs-off succeeded in ")
    assert "error" not in start


def test_a_failed_action_logs_failure_with_the_error_code(vk: Client, captured: Captured) -> None:
    with pytest.raises(InvalidState):
        vk.vms.start("vkecs-on")  # running already
    with pytest.raises(NotFound):
        vk.vms.delete("vkecs-nosuch")
    (start,) = captured.actions("vm.start")
    assert field(start, "event.outcome") == "failure"
    assert field(start, "error.code") == "vm_running"
    assert field(start, "error.type") == "InvalidState"
    assert "running" in field(start, "error.message")
    assert isinstance(field(start, "event.duration"), int)
    assert start["log.level"] == "info"
    (delete,) = captured.actions("vm.delete")
    assert field(delete, "event.outcome") == "failure"
    assert field(delete, "error.code") == "vm_not_found"
    assert field(delete, "virtkit.vm") == "vkecs-nosuch"


def test_any_failure_is_logged_and_the_error_goes_on(captured: Captured) -> None:
    log = logging.getLogger("virtkit.tests")
    with pytest.raises(ZeroDivisionError), logged_action(log, "vkecs.divide", vm="vkecs-x"):
        _ = 1 / 0
    (doc,) = captured.actions("vkecs.divide")
    assert doc["log.level"] == "info"  # the outcome says it; whoever handles it reports it
    assert field(doc, "event.outcome") == "failure"
    assert field(doc, "error.code") == "ZeroDivisionError"
    assert field(doc, "error.type") == "ZeroDivisionError"
    assert "error" not in doc.get("log", {}) and field(doc, "error.stack_trace") is None


def test_a_tasks_records_carry_the_task_and_its_vm(tmp_path: Path, captured: Captured) -> None:
    tasks = TaskRunner(Store(tmp_path / "virtkit.db"), workers=2, host="vkecs-host")
    work_log = logging.getLogger("virtkit.tests.work")

    def work(task: TaskHandle) -> None:
        work_log.info("inside the task")

    def failing(task: TaskHandle) -> None:
        raise InvalidState("vkecs: wrong state", code="vkecs_state")

    done = tasks.submit("vm.create", "vkecs-web", "otto", work)
    failed = tasks.submit("image.import", "pool/vkecs-img", "ada", failing)
    assert tasks.wait(done.id, 10).state == "succeeded"
    assert tasks.wait(failed.id, 10).state == "failed"
    tasks.shutdown()
    work_log.info("outside any task")

    docs = captured.docs()
    (inside,) = [d for d in docs if d["message"] == "inside the task"]
    assert field(inside, "virtkit.task.id") == done.id
    assert field(inside, "virtkit.task.kind") == "vm.create"
    assert field(inside, "virtkit.vm") == "vkecs-web"
    assert field(inside, "user.name") == "otto"
    assert field(inside, "host.name") == "vkecs-host"
    (outside,) = [d for d in docs if d["message"] == "outside any task"]
    assert field(outside, "virtkit") is None and field(outside, "user") is None

    runs = {field(d, "virtkit.task.id"): d for d in captured.actions("task.run")}
    assert field(runs[done.id], "event.outcome") == "success"
    assert isinstance(field(runs[done.id], "event.duration"), int)
    bad = runs[failed.id]
    assert field(bad, "event.outcome") == "failure"
    assert field(bad, "error.code") == "vkecs_state"
    assert field(bad, "user.name") == "ada"
    assert field(bad, "virtkit.vm") is None  # not a VM's task


def test_log_context_nests_and_a_records_own_fields_win(captured: Captured) -> None:
    log = logging.getLogger("virtkit.tests")
    with log_context(**{"virtkit.vm": "vkecs-outer", "user.name": "otto"}):
        with log_context(**{"virtkit.vm": "vkecs-inner"}):
            log.info("inner")
        log.info("own", extra={"user.name": "vera"})
    log.info("after")
    inner, own, after = captured.docs()
    assert field(inner, "virtkit.vm") == "vkecs-inner" and field(inner, "user.name") == "otto"
    assert field(own, "virtkit.vm") == "vkecs-outer" and field(own, "user.name") == "vera"
    assert "virtkit" not in after and "user" not in after


def test_text_mode_stays_level_and_message(
    vk: Client, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> None:
    logs.set_format("text")
    vk.vms.start("vkecs-off")
    lines = captured.stream.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"INFO: vm\.start vkecs-off succeeded in \d+ ms", lines[0]), lines


def test_the_settings_log_format_applies_once_the_settings_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI reads its settings lazily: a TOML file's ``log_format`` switches the format
    when the first command needs the client; ``--log-json`` wins over ``text``."""
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    config = tmp_path / "virtkit.toml"
    config.write_text('log_format = "ecs"\n')
    for name in ("VIRTKIT_URI", "VIRTKIT_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIRTKIT_CONFIG", str(config))
    monkeypatch.setenv("VIRTKIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VIRTKIT_CACHE_DIR", str(tmp_path / "cache"))
    assert logs.early_format(False) == "text" and logs.early_format(True) == "ecs"
    assert logs.early_format(False, {"VIRTKIT_LOG_FORMAT": "ecs"}) == "ecs"
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup_logging(verbose=True, debug=False, log_format="text")
        state = State(f"test://{node}")
        assert not logs.ecs_active()
        state.client.vms.stop("vkecs-on")
        state.close()
        assert logs.ecs_active()
        (doc,) = [ecs_document(line) for line in stream.getvalue().splitlines()]
        assert field(doc, "event.action") == "vm.stop"

        config.write_text('log_format = "text"\n')
        logs.set_format("ecs")  # as --log-json chose at start-up
        forced = State(f"test://{node}", log_json=True)
        forced.client.settings  # noqa: B018 -- reading the settings is the point
        forced.close()
        assert logs.ecs_active()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.captureWarnings(False)
        monkeypatch.setattr(logs, "_handler", None)
        monkeypatch.setattr(logs, "_format", "text")


def test_the_api_logs_each_request_and_its_actions_share_the_request_id(
    tmp_path: Path, captured: Captured
) -> None:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    settings = Settings(
        uri=f"test://{node}", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
        console_log_dir=tmp_path / "logs", storage_pool_path=tmp_path / "images",
    )  # fmt: skip
    from virtkit.api.app import create_app

    client = Client(settings=settings)
    app = create_app(settings, client=client)
    ada = token_clients(client, app, [("ada", "admin")])["ada"]
    with ada:
        assert ada.get("/api/v1/vms").status_code == 200
        assert ada.post("/api/v1/vms/vkecs-on/stop").status_code == 200
        assert ada.post("/api/v1/vms/vkecs-on/pause").status_code == 409  # shut off now
        assert ada.get("/api/v1/vms/vkecs-nosuch").status_code == 404
    client.close()

    access = captured.actions("http.request")
    assert [(field(d, "http.request.method"), field(d, "url.path")) for d in access] == [
        ("GET", "/api/v1/vms"),
        ("POST", "/api/v1/vms/vkecs-on/stop"),
        ("POST", "/api/v1/vms/vkecs-on/pause"),
        ("GET", "/api/v1/vms/vkecs-nosuch"),
    ]
    assert [field(d, "http.response.status_code") for d in access] == [200, 200, 409, 404]
    assert [field(d, "event.outcome") for d in access] == [
        "success", "success", "failure", "failure"
    ]  # fmt: skip
    for doc in access:
        assert field(doc, "user.name") == "ada"
        assert isinstance(field(doc, "event.duration"), int) and field(doc, "event.duration") > 0
        assert field(doc, "event.category") == ["web"] and field(doc, "event.type") == ["access"]
        assert field(doc, "log.logger") == "virtkit.api.access"
    assert field(access[1], "virtkit.route") == "/api/v1/vms/{name}/stop"
    (stop,) = captured.actions("vm.stop")
    assert field(stop, "event.outcome") == "success" and field(stop, "virtkit.vm") == "vkecs-on"
    assert field(stop, "http.request.id") == field(access[1], "http.request.id")
    (pause,) = captured.actions("vm.pause")
    assert field(pause, "event.outcome") == "failure"
    assert field(pause, "error.code") == "vm_shutoff"
    assert len({field(d, "http.request.id") for d in access}) == 4


def test_the_cli_in_ecs_mode_writes_only_ecs_lines_and_ends_with_an_error_record(
    tmp_path: Path,
) -> None:
    """A real ``virtkit`` process on the test driver: a failing action with ``-v`` and
    VIRTKIT_LOG_FORMAT=ecs; every line on stderr is ECS, the last one the CLI's error."""
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    env = {
        **os.environ, "VIRTKIT_URI": f"test://{node}", "VIRTKIT_CONFIG": "/nonexistent",
        "VIRTKIT_STATE_DIR": str(tmp_path / "state"), "VIRTKIT_CACHE_DIR": str(tmp_path / "c"),
        "VIRTKIT_LOG_FORMAT": "ecs", "PYTHONPATH": SRC,
    }  # fmt: skip
    ran = subprocess.run(
        [VIRTKIT, "-v", "vm", "start", "vkecs-on"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    docs = [ecs_document(line) for line in ran.stderr.splitlines()]
    (action,) = [d for d in docs if field(d, "event.action") == "vm.start"]
    assert field(action, "event.outcome") == "failure"
    assert field(action, "error.code") == "vm_running"
    last = docs[-1]
    assert last["log.level"] == "error" and field(last, "error.code") == "vm_running"
    assert "running" in last["message"]


def test_the_filebeat_example_puts_the_documents_at_the_root() -> None:
    """contrib/monitoring/filebeat.yml (docs/monitoring.md): ndjson at the root, keys expanded,
    virtkit's values over Filebeat's, host.name kept."""
    import yaml

    path = Path(__file__).resolve().parents[2] / "contrib" / "monitoring" / "filebeat.yml"
    config = yaml.safe_load(path.read_text())
    (stream,) = [i for i in config["filebeat.inputs"] if i["type"] == "filestream"]
    (parser,) = [p["ndjson"] for p in stream["parsers"] if "ndjson" in p]
    assert parser["target"] == "" and parser["overwrite_keys"] and parser["expand_keys"]
    (host,) = [p["add_host_metadata"] for p in config["processors"] if "add_host_metadata" in p]
    assert host["replace_fields"] is False
