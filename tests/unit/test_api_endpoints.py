"""The API routes of CLI commands that had none, through the real app on libvirt's test driver
with a fake KSM directory: `ksm unmerge|estimate|history|report --plot`, `host fix-kvm`,
`image build`, `volume download` and `vm wait`. Each calls the service the CLI command calls;
here: the permissions, the answers' shapes, and bad requests refused before anything is made.
Whatever a test makes on the (process-wide) test:///default driver is named vkep-* and removed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.apiclients import token_clients
from virtkit import Client, Settings
from virtkit.api.app import create_app
from virtkit.api.routes.storage import attachment
from virtkit.ksm.policies import Sample
from virtkit.services.taskcleanup import remove_build_dir

KSM_FILES = ("run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
             "full_scans", "pages_to_scan", "sleep_millisecs", "general_profit")  # fmt: skip
USERS = (("ada", "admin"), ("otto", "operator"), ("vera", "viewer"))
POOL = "default-pool"  # the test driver's own pool


@dataclass
class Api:
    client: Client
    settings: Settings
    ksm: Path
    ada: TestClient
    otto: TestClient
    vera: TestClient


def _api(tmp_path: Path, scope: str = "all") -> Api:
    ksm = tmp_path / "ksm"
    ksm.mkdir()
    for f in KSM_FILES:
        (ksm / f).write_text("0\n")
    settings = Settings(
        uri="test:///default",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        console_log_dir=tmp_path / "logs",
        storage_pool_path=tmp_path / "images",
        ksm_root=ksm,
        api_vm_scope=scope,
    )
    client = Client(settings=settings)
    app = create_app(settings, client=client)
    clients = token_clients(client, app, USERS)
    return Api(client, settings, ksm, **clients)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = _api(tmp_path)
    with made.ada:  # runs the app's start-up and shut-down
        yield made
    made.client.close()


def error(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message", "detail"}, body
    return str(body["code"])


def record_samples(api: Api, now: float) -> None:
    """Two samples as `ksm tune` records them: two hours ago and a minute ago."""
    history = api.client.ksm.history()
    try:
        history.add(Sample(time=now - 7200, run="1", profit=1 << 20, pages_sharing=256,
                           ksmd_cpu=1.0, vms={"test": (100, 1 << 19)}))  # fmt: skip
        history.add(Sample(time=now - 60, run="1", profit=2 << 20, pages_sharing=512,
                           ksmd_cpu=2.0, vms={"test": (200, 1 << 20)}))  # fmt: skip
    finally:
        history.close()


# -- who may ------------------------------------------------------------------------------------


def test_the_write_routes_refuse_viewers_and_operators(api: Api) -> None:
    for caller in (api.vera, api.otto):
        refused = [
            caller.post("/api/v1/host/ksm/unmerge"),
            caller.post("/api/v1/host/fix-kvm"),
            caller.post("/api/v1/images/build", json={"name": "vkep-img"}),
            caller.get(f"/api/v1/pools/{POOL}/volumes/vkep-none/content"),
        ]
        for r in refused:
            assert error(r, 403) == "forbidden", r.request.url
    assert (api.ksm / "run").read_text() == "0\n"
    assert api.ada.get("/api/v1/tasks").json() == []


def test_viewers_may_read_ksm_but_not_wait(api: Api) -> None:
    """A wait holds one of the service's few task workers for up to its timeout: operators'."""
    assert api.vera.get("/api/v1/host/ksm/history").status_code == 200
    assert error(api.vera.get("/api/v1/host/ksm/plot"), 404) == "ksm_history_empty"
    assert error(api.vera.post("/api/v1/vms/vkep-none/wait"), 403) == "forbidden"
    assert error(api.otto.post("/api/v1/vms/vkep-none/wait"), 404) == "vm_not_found"


# -- KSM ----------------------------------------------------------------------------------------


def test_unmerge_splits_the_pages_and_leaves_ksm_stopped(api: Api) -> None:
    (api.ksm / "run").write_text("1\n")
    r = api.ada.post("/api/v1/host/ksm/unmerge")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["run"] == "stopped" and {"settings", "pages_shared", "vms"} <= set(report)
    # what PATCH /host/ksm answers too (but for ksmd's CPU time: this machine's own ksmd, which
    # runs while another worker's KSM tests do)
    again = api.ada.get("/api/v1/host/ksm").json()
    assert {**report, "ksmd_cpu_seconds": None} == {**again, "ksmd_cpu_seconds": None}
    assert (api.ksm / "run").read_text().strip() == "0"


def test_estimate_names_the_vm_it_cannot_read(api: Api) -> None:
    # The test driver's VM runs, but no QEMU process is behind it to read.
    assert error(api.vera.get("/api/v1/host/ksm/estimate"), 422) == "unsupported"
    assert error(api.vera.get("/api/v1/host/ksm/estimate", params={"vm": "test"}), 422)
    missing = api.vera.get("/api/v1/host/ksm/estimate", params={"vm": ["vkep-none", "test"]})
    assert error(missing, 404) == "vm_not_found"
    assert error(api.vera.get("/api/v1/host/ksm/estimate", params={"vm": "a b"}), 422) == (
        "invalid_name"
    )


def test_history_since_and_per_vm(api: Api) -> None:
    empty = api.vera.get("/api/v1/host/ksm/history")
    assert empty.status_code == 200 and empty.json() == {"host": [], "vms": []}
    record_samples(api, time.time())
    every = api.vera.get("/api/v1/host/ksm/history").json()
    assert [p["saved"] for p in every["host"]] == [1 << 20, 2 << 20]
    assert every["vms"] == []  # per-VM samples only of the VMs asked for, as the CLI
    assert set(every["host"][0]) >= {"time", "run", "pages_sharing", "ksmd_cpu_share"}
    recent = api.vera.get("/api/v1/host/ksm/history", params={"since": "1h", "vm": "test"})
    assert recent.status_code == 200, recent.text
    assert [p["saved"] for p in recent.json()["host"]] == [2 << 20]
    assert [(p["name"], p["merging_pages"]) for p in recent.json()["vms"]] == [("test", 200)]
    for bad in ("yesterday", "5", "1w", "²d", "-1h"):
        r = api.vera.get("/api/v1/host/ksm/history", params={"since": bad})
        assert error(r, 422) == "invalid_since", bad


def test_history_and_plot_keep_to_the_callers_vms(tmp_path: Path) -> None:
    own = _api(tmp_path, scope="own")
    with own.ada:
        record_samples(own, time.time())
        theirs = own.vera.get("/api/v1/host/ksm/history", params={"vm": "test"})
        assert theirs.status_code == 200 and theirs.json()["vms"] == []  # not the viewer's VM
        assert len(own.ada.get("/api/v1/host/ksm/history", params={"vm": "test"}).json()["vms"])
        assert own.vera.get("/api/v1/host/ksm/plot").status_code == 200
        # An estimate over the caller's own running VMs: none here, so nothing is read.
        none = own.vera.get("/api/v1/host/ksm/estimate")
        assert none.status_code == 200, none.text
        assert none.json()["vms"] == [] and none.json()["pages"] == 0
        hidden = own.vera.get("/api/v1/host/ksm/estimate", params={"vm": "test"})
        assert error(hidden, 404) == "vm_not_found"  # another's VM: as if it did not exist
    own.client.close()


def test_plot_answers_with_the_image(api: Api) -> None:
    assert error(api.vera.get("/api/v1/host/ksm/plot"), 404) == "ksm_history_empty"
    record_samples(api, time.time())
    png = api.vera.get("/api/v1/host/ksm/plot")
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert int(png.headers["content-length"]) == len(png.content)
    svg = api.vera.get("/api/v1/host/ksm/plot", params={"format": "svg", "since": "7d"})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content[:1000]
    assert error(api.vera.get("/api/v1/host/ksm/plot", params={"since": "10s"}), 404) == (
        "ksm_history_empty"  # no sample that new
    )
    assert error(api.vera.get("/api/v1/host/ksm/plot", params={"format": "pdf"}), 422)
    assert list((api.settings.cache_dir / "work").iterdir()) == []  # no chart left behind


# -- the host -----------------------------------------------------------------------------------


def test_fix_kvm_says_what_it_did(api: Api, tmp_path: Path) -> None:
    # Never this machine's /dev/kvm: a device path that does not exist.
    api.client.probe.kvm_device = tmp_path / "vkep-kvm"
    r = api.ada.post("/api/v1/host/fix-kvm")
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is False and "does not exist" in r.json()["message"]


# -- images -------------------------------------------------------------------------------------


def test_a_bad_build_is_refused_at_once_and_makes_nothing(api: Api) -> None:
    volumes = api.ada.post(f"/api/v1/pools/{POOL}/volumes", json={"name": "vkep-taken",
                                                                   "size": "1M"})  # fmt: skip
    assert volumes.status_code == 201, volumes.text
    try:
        bad = {
            "invalid_name": {"name": "../vkep-img"},
            "invalid_suite": {"name": "vkep-img", "suite": "Bookworm; rm"},
            "invalid_mirror": {"name": "vkep-img", "mirror": "--keyring=/etc/shadow"},
            "invalid_size": {"name": "vkep-img", "size_gib": 0},
            "invalid_input": {"name": "vkep-img", "colour": "blue"},
        }
        for code, body in bad.items():
            assert error(api.ada.post("/api/v1/images/build", json=body), 422) == code, body
        missing = api.ada.post("/api/v1/images/build", json={"name": "vkep-img",
                                                             "pool": "vkep-none"})  # fmt: skip
        assert error(missing, 404) == "pool_not_found"
        taken = api.ada.post("/api/v1/images/build", json={"name": "vkep-taken", "pool": POOL})
        assert error(taken, 409) == "volume_exists"
        assert api.ada.get("/api/v1/tasks").json() == []
        assert not (api.settings.cache_dir / "images").exists()
        names = [v["name"] for v in api.ada.get(f"/api/v1/pools/{POOL}/volumes").json()]
        assert "vkep-img" not in names
    finally:
        api.client.pools.delete_volume(POOL, "vkep-taken")


def test_a_cut_off_build_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    """What the next service start removes for a build whose process died (its recovery)."""
    images = tmp_path / "images"
    build = images / "vkep-img[1]-20260101-120000"
    for d in (build, images / ".vkep-img[1]-20260101-120000.x1y2", images / "vkep-img-keep"):
        (d / "rootfs").mkdir(parents=True)
    remove_build_dir(build)
    assert [d.name for d in images.iterdir()] == ["vkep-img-keep"]


# -- volume download ----------------------------------------------------------------------------


def test_download_streams_the_volume(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt's test driver cannot download a volume (virStorageVolDownload is not
    supported): the real driver's refusal is checked, then the seam's stream is replaced by
    one that yields known chunks, to see them come out of the route as they went in."""
    made = api.ada.post(f"/api/v1/pools/{POOL}/volumes", json={"name": "vkep-disk é.img",
                                                                "size": "1M"})  # fmt: skip
    assert made.status_code == 201, made.text
    url = f"/api/v1/pools/{POOL}/volumes/vkep-disk é.img/content"
    try:
        assert error(api.ada.get(url), 422) == "unsupported"  # before any byte was sent
        closed = []

        def download(pool: str, name: str, progress: Any = None) -> Iterator[bytes]:
            try:
                yield from (b"vkep" * 1000, b"", b"-end")
            finally:
                closed.append((pool, name))

        monkeypatch.setattr(api.client.host.storage, "download", download)
        r = api.ada.get(url)
        assert r.status_code == 200, r.text
        assert r.content == b"vkep" * 1000 + b"-end"
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == (
            "attachment; filename*=utf-8''vkep-disk%20%C3%A9.img"
        )
        assert closed == [(POOL, "vkep-disk é.img")]
        # a disk's bytes handed out: in the audit log, like a change
        audit = api.ada.get("/api/v1/audit", params={"user": "ada", "limit": 20}).json()
        reads = [e for e in audit if e["action"].startswith("GET ")]
        assert [(e["action"], e["result"]) for e in reads][:1] == [
            ("GET /api/v1/pools/{pool}/volumes/{volume}/content", "200")
        ], audit
    finally:
        api.client.pools.delete_volume(POOL, "vkep-disk é.img")
    assert error(api.ada.get(url), 404) == "volume_not_found"
    assert error(api.ada.get("/api/v1/pools/vkep-none/volumes/x/content"), 404)


def test_download_from_a_stopped_pool(api: Api, tmp_path: Path) -> None:
    spec = {"name": "vkep-pool", "type": "dir", "path": str(tmp_path / "vkep-pool")}
    assert api.ada.post("/api/v1/pools", json=spec).status_code == 201
    try:
        assert api.ada.post("/api/v1/pools/vkep-pool/stop").status_code == 200
        r = api.ada.get("/api/v1/pools/vkep-pool/volumes/x.img/content")
        assert error(r, 409) == "pool_inactive"
    finally:
        api.client.pools.delete_pool("vkep-pool")


def test_attachment_names() -> None:
    assert attachment("disk.qcow2") == 'attachment; filename="disk.qcow2"'
    assert attachment('a"b') == "attachment; filename*=utf-8''a%22b"


# -- vm wait ------------------------------------------------------------------------------------


def test_wait_refuses_what_it_cannot_wait_for(api: Api) -> None:
    assert error(api.otto.post("/api/v1/vms/vkep-none/wait", json={"for": "boot"}), 404) == (
        "vm_not_found"
    )
    for body in ({"for": "dinner"}, {"for": "boot", "timeout": 0}, {"what": "boot"},
                 {"timeout": 7200}):  # fmt: skip
        assert error(api.otto.post("/api/v1/vms/test/wait", json=body), 422) == "invalid_input"
    assert error(api.otto.post("/api/v1/vms/a%20b/wait"), 422) == "invalid_name"
    undo = api.client.host.define(
        "<domain type='test'><name>vkep-off</name><memory>131072</memory>"
        "<os><type>hvm</type></os></domain>"
    ).undefine
    try:
        assert error(api.otto.post("/api/v1/vms/vkep-off/wait"), 409) == "vm_shutoff"
    finally:
        undo()
    assert api.ada.get("/api/v1/tasks").json() == []


def test_wait_is_a_task_with_the_seconds(api: Api) -> None:
    log = api.client.vms.files.serial_log("test")
    assert log is not None
    log.parent.mkdir(parents=True, exist_ok=True)
    late = api.otto.post("/api/v1/vms/test/wait", json={"for": "boot", "timeout": 0.5})
    assert late.status_code == 202, late.text
    assert late.headers["location"] == f"/api/v1/tasks/{late.json()['id']}"
    failed = api.otto.get(f"/api/v1/tasks/{late.json()['id']}", params={"wait": 10}).json()
    assert failed["state"] == "failed" and failed["error"]["code"] == "wait_timeout"
    assert failed["kind"] == "vm.wait" and failed["user"] == "otto"

    log.write_text("Debian GNU/Linux 12 test ttyS0\n\ntest login: ")
    booted = api.otto.post("/api/v1/vms/test/wait", json={"for": "boot", "timeout": 30})
    assert booted.status_code == 202, booted.text
    done = api.otto.get(f"/api/v1/tasks/{booted.json()['id']}", params={"wait": 10}).json()
    assert done["state"] == "succeeded", done
    assert done["result"]["name"] == "test" and done["result"]["for"] == "boot"
    assert 0 <= done["result"]["seconds"] < 30


def test_a_wait_ends_when_the_service_stops(api: Api) -> None:
    """A wait holds a worker for up to its timeout; a stopping service does not wait for it."""
    r = api.otto.post("/api/v1/vms/test/wait", json={"for": "cloud-init", "timeout": 600})
    assert r.status_code == 202, r.text
    tasks = api.ada.app.state.ctx.tasks  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while tasks.get(r.json()["id"]).state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    tasks.shutdown(wait=True)
    assert time.monotonic() - started < 5
    task = tasks.get(r.json()["id"])
    assert task.state == "failed" and task.error is not None
    assert task.error.code == "service_stopping"


# -- several hosts -------------------------------------------------------------------------------


def test_hosts_placement_and_migration_refusals(api: Api, tmp_path: Path) -> None:
    node = tmp_path / "other.xml"
    node.write_text(
        "<node><domain type='test'><name>vkep-far</name><memory unit='MiB'>64</memory>"
        "<os><type>hvm</type></os></domain></node>"
    )
    assert api.ada.get("/api/v1/hosts").json() == []
    body = {"name": "far", "uri": f"test://{node}", "tags": ["ssd"]}
    assert error(api.vera.post("/api/v1/hosts", json=body), 403) == "forbidden"
    added = api.ada.post("/api/v1/hosts", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["reachable"] and added.json()["vms_total"] == 1
    assert error(api.ada.post("/api/v1/hosts", json=body), 409) == "host_exists"
    bad = {**body, "name": "other", "uri": "http://x/system"}
    assert error(api.ada.post("/api/v1/hosts", json=bad), 422) == "invalid_uri"
    listed = api.vera.get("/api/v1/hosts").json()
    assert [h["host"]["name"] for h in listed] == ["far"] and listed[0]["host"]["tags"] == ["ssd"]
    assert api.vera.get("/api/v1/hosts/far").json()["host"]["uri"] == f"test://{node}"
    assert error(api.vera.get("/api/v1/hosts/nope"), 404) == "host_not_found"
    on = api.ada.put("/api/v1/hosts/far/maintenance", json={"on": True, "reason": "RAM"})
    assert on.json()["maintenance"] and on.json()["maintenance_reason"] == "RAM"
    placed = api.vera.post("/api/v1/placement", json={"memory": 64 << 20, "vcpus": 1})
    assert placed.status_code == 200 and placed.json()["host"] is None
    assert "far: in maintenance (RAM)" in placed.json()["summary"]
    # a migration to an unknown host, or of a VM on no registered host: refused at once
    assert error(api.ada.post("/api/v1/vms/vkep-far/migrate", json={"to": "nope"}), 404) == (
        "host_not_found"
    )
    assert error(api.ada.post("/api/v1/vms/vkep-gone/migrate", json={"to": "far"}), 404) == (
        "vm_not_found"
    )
    assert error(api.otto.post("/api/v1/vms/vkep-far/migrate", json={"to": "far"}), 403) == (
        "forbidden"
    )
    gone = api.ada.delete("/api/v1/hosts/far")
    assert gone.status_code == 200 and api.ada.get("/api/v1/hosts").json() == []
