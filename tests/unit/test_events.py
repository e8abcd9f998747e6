"""Domain events: libvirt's numbers named, the kinds, the JSON shape of ``virtkit events``, the
feed of several hosts (one unreachable), and events resuming after a reconnect.

libvirt's test driver emits lifecycle events within one process; ``test:///default`` is shared
by every connection of the process, so what a test makes there is named vkev-* and removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from virtkit import Client
from virtkit.backend import events as backend_events
from virtkit.backend.events import DomainEvent
from virtkit.cli import events as cli_events
from virtkit.cli.main import main
from virtkit.errors import ConnectionFailed
from virtkit.services import eventfeed
from virtkit.services.eventfeed import EventFeed
from virtkit.services.eventhub import EventHub

TEST_URI = "test:///default"
NOWHERE = "qemu+unix:///system?socket=/nonexistent/vkev-sock"


class Domain:
    """A domain on the shared test driver, through a connection of its own."""

    def __init__(self) -> None:
        self.name = "vkev-" + secrets.token_hex(3)
        self.conn = libvirt.open(TEST_URI)
        self.dom: Any = None

    def define(self) -> None:
        xml = (
            f"<domain type='test'><name>{self.name}</name><memory>8192</memory>"
            "<os><type>hvm</type></os></domain>"
        )
        self.dom = self.conn.defineXML(xml)

    def whole_life(self) -> None:
        self.define()
        self.dom.create()
        self.dom.suspend()
        self.dom.resume()
        self.dom.destroy()
        self.dom.undefine()

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            dom = self.conn.lookupByName(self.name)
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            dom.undefine()
        self.conn.close()


@pytest.fixture
def domain() -> Iterator[Domain]:
    d = Domain()
    yield d
    d.close()


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """The CLI sets up the root logger for its process: give pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


LIFE = [
    ("defined", "added"),
    ("started", "booted"),
    ("suspended", "paused"),
    ("resumed", "unpaused"),
    ("stopped", "destroyed"),
    ("undefined", "removed"),
]


def _collect(q: queue.Queue[DomainEvent], name: str, count: int) -> list[DomainEvent]:
    out: list[DomainEvent] = []
    while len(out) < count:
        event = q.get(timeout=5)
        if event.domain == name:
            out.append(event)
    return out


def test_lifecycle_events_are_named_and_carry_their_host(domain: Domain) -> None:
    arrived: queue.Queue[DomainEvent] = queue.Queue()
    with Client(TEST_URI) as client:
        unsubscribe = client.subscribe(arrived.put)
        try:
            domain.whole_life()
            seen = _collect(arrived, domain.name, len(LIFE))
        finally:
            unsubscribe()
    assert [(e.event, e.detail_name) for e in seen] == LIFE
    assert {e.kind for e in seen} == {"lifecycle"} and {e.host for e in seen} == {TEST_URI}
    stopped = seen[4].as_dict()
    assert stopped == {
        "host": TEST_URI, "vm": domain.name, "uuid": seen[4].uuid, "kind": "lifecycle",
        "event": "stopped", "detail": "destroyed", "data": {},
    }  # fmt: skip
    assert stopped["detail"] != str(seen[4].detail)  # a name, not libvirt's number (1)


def test_old_style_events_still_make_whole_ones() -> None:
    """Subscribers and tests that build DomainEvent from its first four fields keep working."""
    stopped = DomainEvent("a", "u", "stopped", 1)
    assert (stopped.kind, stopped.detail_name, stopped.host, stopped.data) == (
        "lifecycle", "destroyed", "", {},
    )  # fmt: skip
    changed = DomainEvent("a", "u", "metadata-changed", 2)
    assert changed.kind == "metadata"
    assert backend_events.detail_name("suspended", 2) == "ioerror"
    assert backend_events.detail_name("stopped", 99) == "99"  # a newer libvirt's: its number


class _Dom:
    def name(self) -> str:
        return "vkev-x"

    def UUIDString(self) -> str:
        return "0000-1"


def test_job_and_device_events_are_typed() -> None:
    """What libvirt hands the callbacks (the statistics as a real backup reported them)."""
    stats = {"operation": libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP, "time_elapsed": 52,
             "disk_total": 16777216, "disk_processed": 16777216, "success": True}  # fmt: skip
    job = backend_events.from_job_completed(_Dom(), stats, host="h")
    assert (job.kind, job.event, job.detail_name) == ("job", "completed", "backup")
    assert job.data == {**stats, "operation": "backup"}
    block = backend_events.from_block_job(
        _Dom(), "vda", libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT,
        libvirt.VIR_DOMAIN_BLOCK_JOB_READY, host="h",
    )  # fmt: skip
    assert (block.kind, block.event, block.detail_name) == ("block-job", "ready", "active-commit")
    assert block.data == {"disk": "vda", "type": "active-commit", "status": "ready"}
    io = backend_events.from_io_error(
        _Dom(), "/img/a.qcow2", "virtio-disk0", libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE,
        "enospc", host="h",
    )  # fmt: skip
    assert (io.kind, io.event, io.detail_name) == ("io-error", "io-error", "pause")
    assert io.data == {
        "path": "/img/a.qcow2", "device": "virtio-disk0", "action": "pause", "reason": "enospc"
    }  # fmt: skip
    migration = backend_events.from_migration_iteration(_Dom(), 3, host="h")
    assert (migration.kind, migration.data) == ("migration", {"iteration": 3})
    reboot = backend_events.from_reboot(_Dom(), host="h")
    assert (reboot.kind, reboot.event) == ("lifecycle", "rebooted")
    assert json.loads(json.dumps(job.as_dict()))["data"]["disk_total"] == 16777216


def test_the_cli_kinds_are_the_backends() -> None:
    assert set(cli_events.KINDS) == set(backend_events.KINDS) - {"connection"}


def test_the_hub_keeps_the_old_fields_and_adds_the_new() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    hub.vm_event(backend_events.from_block_job(_Dom(), "vda", 2, 0, host="h"))
    got = sub.get(1)
    assert got is not None and got.kind == "vm"
    assert got.data == {
        "vm": "vkev-x", "uuid": "0000-1", "event": "completed", "detail": 2,
        "kind": "block-job", "detail_name": "copy", "host": "h",
        "data": {"disk": "vda", "type": "copy", "status": "completed"},
    }  # fmt: skip


def test_the_feed_filters_and_reports_an_unreachable_host(domain: Domain) -> None:
    with Client(TEST_URI) as here, Client(NOWHERE) as away:
        feed = EventFeed([here.host, away.host, here.host], kinds=["lifecycle"], vms=[domain.name])
        feed.start()
        try:
            first = feed.get(1)
            assert first is not None and first.event.kind == "connection"
            assert (first.event.host, first.event.event) == (NOWHERE, "unreachable")
            assert "cannot connect" in first.event.detail_name
            Domain().whole_life()  # another VM: filtered out
            domain.whole_life()
            got = [feed.get(5) for _ in LIFE]
            assert [(f.event.event, f.event.detail_name) for f in got if f] == LIFE  # once each
            assert feed.get(0.2) is None
            assert feed.hostnames[TEST_URI] and feed.hostnames[NOWHERE] is None
        finally:
            feed.close()


def test_no_reachable_host_is_one_error() -> None:
    with Client(NOWHERE) as away:
        with pytest.raises(ConnectionFailed, match="cannot connect to libvirt at"):
            EventFeed([away.host]).start()
        with pytest.raises(ConnectionFailed, match="no host could be reached"):
            EventFeed([away.host, Client(NOWHERE + "2").host]).start()


def test_events_resume_after_a_reconnect(domain: Domain) -> None:
    """A lost connection (marked dead, as libvirt's close callback does) is reopened by the
    watchdog, reported lost and back, and the new connection delivers events again."""
    with Client(TEST_URI) as client:
        feed = EventFeed([client.host], vms=[domain.name], watch_interval=0.1)
        feed.start()
        try:
            generation = client.connection.generation
            client.connection.mark_dead()
            states = [feed.get(5), feed.get(5)]
            assert [(s.event.kind, s.event.event) for s in states if s] == [
                ("connection", "lost"), ("connection", "reconnected"),
            ]  # fmt: skip
            assert client.connection.generation == generation + 1
            domain.define()
            defined = feed.get(5)
            assert defined is not None and defined.event.event == "defined"
        finally:
            feed.close()


@pytest.mark.usefixtures("cli_logging")
def test_the_command_prints_json_lines(
    domain: Domain, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listening = threading.Event()
    start = EventFeed.start

    def started(self: EventFeed) -> None:
        start(self)
        listening.set()

    def act() -> None:
        if listening.wait(10):
            domain.whole_life()

    monkeypatch.setattr(eventfeed.EventFeed, "start", started)
    actor = threading.Thread(target=act)
    actor.start()
    args = ["-c", TEST_URI, "events", "--json", "--vm", domain.name, "--kind", "lifecycle"]
    main([*args, "--timeout", "4"])  # room for a loaded machine: the events come in ms
    actor.join()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["event"], r["detail"]) for r in lines] == LIFE
    first = lines[0]
    assert set(first) == {
        "time", "host", "hostname", "vm", "uuid", "kind", "event", "detail", "data"
    }  # fmt: skip
    assert first["host"] == TEST_URI and first["vm"] == domain.name and first["data"] == {}
    assert first["time"].endswith("Z") and "T" in first["time"]


@pytest.mark.usefixtures("cli_logging")
def test_only_unreachable_hosts_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["-c", NOWHERE, "events", "--timeout", "1"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot connect to libvirt at") and err.count("\n") == 1


def test_text_lines_name_the_host() -> None:
    names: dict[str, str | None] = {"qemu+ssh://a/system": "alpha", "test:///x": "alpha"}
    assert cli_events.host_label("qemu+ssh://a/system", names) == "qemu+ssh://a/system"
    names["test:///x"] = "beta"
    assert cli_events.host_label("qemu+ssh://a/system", names) == "alpha"
    record = {
        "time": "T", "host": "test:///x", "vm": "vkev-x", "kind": "job", "event": "completed",
        "detail": "backup", "data": {"time_elapsed": 52, "disk_total": 16 * 2**20,
                                     "disk_processed": 8 * 2**20, "success": True},
    }  # fmt: skip
    line = cli_events.text_line(record, names)
    assert line.startswith("T  beta  vkev-x") and "job completed (backup)" in line
    assert "52 ms" in line and "8" in line and "16" in line
    lost = {**record, "vm": None, "kind": "connection", "event": "lost", "detail": "end of file"}
    assert cli_events.text_line(lost, names) == (
        "T  beta  -- connection lost (end of file); reconnecting"
    )
    assert cli_events.iso_time(0.5) == "1970-01-01T00:00:00.500Z"
