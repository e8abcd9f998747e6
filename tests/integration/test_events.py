"""``virtkit events`` against two real hosts: the bed's libvirtd and a second private one.

Lifecycle lines name the host they came from; a backup of a running guest's qcow2 disk
(``virsh backup-begin``, the cheapest job that libvirt reports when done) yields a ``job``
event with its statistics and a ``block-job`` event; a host that is killed and started again
is reported lost, then reconnected, and its events resume.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest

from tests.conftest import VIRTKIT, Bed, tiny_spec
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit.errors import NotFound
from virtkit.specs import parse_vm_spec

pytestmark = pytest.mark.integration

SECOND_HOSTNAME = "vkev-second"


@pytest.fixture(scope="module")
def second(bed: Bed) -> Iterator[PrivateLibvirtd]:
    """A second libvirtd with a host name of its own. It starts with the bed's cache of QEMU's
    capabilities (the same binaries), so its first define takes milliseconds, not seconds."""
    daemon = PrivateLibvirtd(name="vkev", hostname=SECOND_HOSTNAME)
    caps = bed.daemon.base / "cache" / "qemu"
    if caps.is_dir():
        shutil.copytree(caps, daemon.base / "cache" / "qemu", dirs_exist_ok=True)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


class Follower:
    """``virtkit events --json`` as our own child; its lines parsed, as they come."""

    def __init__(self, bed: Bed, *args: str) -> None:
        self.proc = subprocess.Popen(
            [VIRTKIT, "events", "--json", "--timeout", "90", *args],
            env=bed.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any] | None:
        """The first line (seen before, or arriving within ``timeout``) that matches."""
        for record in self.seen:
            if match(record):
                return record
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self.lines.get(timeout=min(left, 0.25))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(record)
            if match(record):
                return record
        return None

    def expect(self, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        record = self.wait_for(lambda r: all(r.get(k) == v for k, v in fields.items()), timeout)
        if record is None:
            self.stop()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"no line with {fields}; lines: {self.seen}; stderr: {stderr}")
        return record

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


class Marker:
    """A domain defined (never started) on a host, redefined at will: each definition is an
    event that needs no QEMU."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.name = "vkev-mark-" + secrets.token_hex(3)
        self.xml = (
            f"<domain type='qemu'><name>{self.name}</name><uuid>{uuid.uuid4()}</uuid>"
            "<memory>65536</memory><os><type arch='x86_64'>hvm</type></os></domain>"
        )

    def define(self) -> None:
        conn = libvirt.open(self.uri)
        try:
            conn.defineXML(self.xml)
        finally:
            conn.close()

    def remove(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(self.uri)
            try:
                conn.lookupByName(self.name).undefine()
            finally:
                conn.close()


def _until_heard(follower: Follower, marker: Marker, timeout: float = 20.0) -> dict[str, Any]:
    """Redefine ``marker`` until the follower prints it: then it surely listens on that host."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marker.define()
        record = follower.wait_for(lambda r: r.get("vm") == marker.name, timeout=0.3)
        if record is not None:
            return record
    return follower.expect(timeout=0, vm=marker.name)


@pytest.fixture
def guest_name(bed: Bed) -> Iterator[str]:
    name = "vkev-" + secrets.token_hex(3)
    yield name
    with bed.client() as client, contextlib.suppress(NotFound):
        client.vms.delete(name, force=True, remove_storage=True)
    for leftover in bed.pool_dir.glob(f"{name}-*"):  # the backup's copy of the disk too
        leftover.unlink()


def test_lifecycle_and_job_events_of_two_hosts(
    bed: Bed, second: PrivateLibvirtd, guest_name: str
) -> None:
    follower = Follower(bed, "--host", second.uri)
    on_second, on_bed = Marker(second.uri), Marker(bed.uri)
    try:
        heard = _until_heard(follower, on_second)
        assert heard["host"] == second.uri and heard["hostname"] == SECOND_HOSTNAME
        assert heard["kind"] == "lifecycle" and heard["event"] == "defined"
        heard = _until_heard(follower, on_bed)
        assert heard["host"] == bed.uri and heard["hostname"] not in (None, SECOND_HOSTNAME)

        name = guest_name
        with bed.client() as client:
            client.vms.create(
                parse_vm_spec(tiny_spec(bed, name, disks=[{"size": "16M"}])), start=True
            )
            client.vms.pause(name)
            client.vms.resume(name)
            backup = subprocess.run(
                ["virsh", "-c", bed.uri, "backup-begin", name],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert backup.returncode == 0, backup.stderr
            job = follower.expect(vm=name, kind="job", event="completed")
            block = follower.expect(vm=name, kind="block-job")
            client.vms.stop(name)
        stopped = follower.expect(vm=name, event="stopped")

        mine = [r for r in follower.seen if r["vm"] == name]
        assert {r["host"] for r in mine} == {bed.uri}
        named = [(r["event"], r["detail"]) for r in mine if r["kind"] == "lifecycle"]
        for pair in [("defined", "added"), ("started", "booted"), ("suspended", "paused")]:
            assert pair in named, named
        assert ("resumed", "unpaused") in named and stopped["detail"] == "destroyed"
        assert job["detail"] == "backup" and job["data"]["operation"] == "backup"
        assert job["data"]["success"] is True and job["data"]["disk_total"] == 16 * 2**20
        assert job["data"]["time_elapsed"] >= 0
        assert block["event"] == "completed" and block["detail"] == "backup"
        assert block["data"] == {"disk": "vda", "type": "backup", "status": "completed"}
        # nothing of the bed's guest was attributed to the second host, and each line is whole
        for record in follower.seen:
            assert set(record) == {
                "time", "host", "hostname", "vm", "uuid", "kind", "event", "detail", "data"
            }  # fmt: skip
            assert record["time"].endswith("Z")
    finally:
        follower.stop()
        on_second.remove()
        on_bed.remove()


def test_events_resume_after_a_host_restarts(bed: Bed, second: PrivateLibvirtd) -> None:
    follower = Follower(bed, "--host", second.uri)
    marker = Marker(second.uri)
    try:
        _until_heard(follower, marker)
        second.kill()  # our own child, as a crash would
        lost = follower.expect(host=second.uri, kind="connection", event="lost")
        assert lost["vm"] is None and lost["detail"]
        second.start()
        follower.expect(host=second.uri, kind="connection", event="reconnected")
        count = len([r for r in follower.seen if r["vm"] == marker.name])
        marker.define()  # a daemon that restarted forgets nothing persistent: "updated"
        heard = follower.wait_for(
            lambda r: r["vm"] == marker.name and follower.seen.index(r) >= count
        )
        assert heard is not None, follower.seen
        assert (heard["event"], heard["detail"]) == ("defined", "updated")
        assert heard["hostname"] == SECOND_HOSTNAME
    finally:
        follower.stop()
        marker.remove()
