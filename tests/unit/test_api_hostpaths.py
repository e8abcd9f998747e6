"""The API routes that take host paths (VM create, disk attach, CD-ROM media) refuse an operator's
path outside the storage pools with 403 ``host_path_forbidden`` before anything is done; the
real app on libvirt's test driver, with a directory pool in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.unit.apiclients import token_clients
from virtkit import Client, Settings
from virtkit.api.app import create_app
from virtkit.services.domainbuilder import ResolvedDisk, disk_element, disk_letters
from virtkit.specs import VolumeSpec
from virtkit.specs.vm import VMSpec
from virtkit.xml.domain import Disk, Domain

NODE = """<node>
  <domain type='test'>
    <name>web1</name>
    <memory>131072</memory>
    <os><type>hvm</type></os>
  </domain>
  <pool type='dir'>
    <name>vms</name>
    <target><path>{pool}</path></target>
  </pool>
</node>
"""


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "data.img").write_bytes(b"\0" * 512)
    (pool / "shadow.img").symlink_to("/etc/shadow")
    return pool


@pytest.fixture
def api(tmp_path: Path, pool: Path) -> Iterator[dict[str, TestClient]]:
    node = tmp_path / "node.xml"
    node.write_text(NODE.format(pool=pool))
    settings = Settings(
        uri=f"test://{node}", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"
    )
    client = Client(settings=settings)
    app = create_app(settings, client=client)
    clients = token_clients(client, app, (("ada", "admin"), ("otto", "operator")))
    yield clients
    for c in clients.values():
        c.close()
    app.state.ctx.tasks.shutdown(wait=True)
    client.close()


def forbidden(r: httpx.Response, field: str, path: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == "host_path_forbidden"
    assert field in body["message"] and repr(path) in body["message"]


def test_an_operator_creates_no_vm_from_host_paths(api: dict[str, TestClient], pool: Path) -> None:
    otto, ada = api["otto"], api["ada"]
    for spec, field, path in (
        ({"kernel": "/etc/passwd"}, "kernel", "/etc/passwd"),
        ({"kernel": str(pool / "data.img"), "initrd": "/etc/passwd"}, "initrd", "/etc/passwd"),
        ({"cdrom": "/etc/passwd"}, "cdrom", "/etc/passwd"),
        ({"disks": [{"size": "1G"}, {"path": "/etc/shadow"}]}, "disks[1].path", "/etc/shadow"),
        ({"disks": [{"path": f"{pool}/../../x"}]}, "disks[0].path", f"{pool}/../../x"),
        (
            {"disks": [{"path": str(pool / "shadow.img")}]},
            "disks[0].path",
            str(pool / "shadow.img"),
        ),
    ):
        forbidden(otto.post("/api/v1/vms", json={"name": "evil", **spec}), field, path)
    assert otto.get("/api/v1/vms/evil").status_code == 404
    assert otto.get("/api/v1/tasks").json() == []  # refused before any task
    # inside the pool it passes the check (and meets the next one: the name is taken)
    inside = otto.post("/api/v1/vms", json={"name": "web1", "kernel": str(pool / "data.img")})
    assert inside.status_code == 409 and inside.json()["code"] == "vm_exists"
    assert (
        ada.post("/api/v1/vms", json={"name": "web1", "kernel": "/etc/passwd"}).status_code == 409
    )


def test_an_operator_attaches_no_host_paths(api: dict[str, TestClient], pool: Path) -> None:
    otto, ada = api["otto"], api["ada"]
    forbidden(
        otto.post("/api/v1/vms/web1/disks", json={"path": "/etc/shadow"}), "path", "/etc/shadow"
    )
    forbidden(
        otto.post("/api/v1/vms/web1/cdrom", json={"iso": "/etc/passwd"}), "iso", "/etc/passwd"
    )
    linked = str(pool / "shadow.img")
    forbidden(otto.post("/api/v1/vms/web1/disks", json={"path": linked}), "path", linked)
    # allowed paths get past the check to the VM lookup
    data = str(pool / "data.img")
    assert otto.post("/api/v1/vms/nope/disks", json={"path": data}).status_code == 404
    assert ada.post("/api/v1/vms/nope/cdrom", json={"iso": "/etc/passwd"}).status_code == 404
    assert otto.post("/api/v1/vms/nope/cdrom", json={}).status_code == 404  # eject: no path
    disks = otto.get("/api/v1/vms/web1/disks").json()
    assert all(d["source"] != "/etc/shadow" for d in disks)


@pytest.fixture
def chain(pool: Path) -> Iterator[dict[str, Path]]:
    """Real images in the pool (made by qemu-img): one whose qcow2 header names a host file as
    its backing file, one with a clean chain, one raw file whose bytes are a qcow2 header."""
    if shutil.which("qemu-img") is None:
        pytest.skip("needs qemu-img")
    made = {
        "evil": pool / "vkchain-evil.qcow2",
        "base": pool / "vkchain-base.qcow2",
        "good": pool / "vkchain-good.qcow2",
    }
    for path, options in (
        (made["evil"], ["-b", "/etc/passwd", "-F", "raw"]),
        (made["base"], []),
        (made["good"], ["-b", str(made["base"]), "-F", "qcow2"]),
    ):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), "1M"],
            check=True,
            timeout=60,
        )
    yield made
    for path in made.values():
        path.unlink(missing_ok=True)


def test_an_operator_names_no_in_pool_image_whose_chain_leads_out(
    api: dict[str, TestClient], chain: dict[str, Path]
) -> None:
    otto, ada = api["otto"], api["ada"]
    evil, good = str(chain["evil"]), str(chain["good"])
    r = otto.post("/api/v1/vms", json={"name": "web1", "disks": [{"path": evil}]})
    forbidden(r, "disks[0].path", evil)
    assert "backing file '/etc/passwd'" in r.json()["message"]
    r = otto.post("/api/v1/vms/web1/disks", json={"path": evil})
    forbidden(r, "path", evil)
    assert "backing file '/etc/passwd'" in r.json()["message"]
    assert all(d["source"] != evil for d in otto.get("/api/v1/vms/web1/disks").json())
    # as raw QEMU follows no header, and a chain inside the pool is fine: both pass the check
    # (and meet the next one: the name is taken)
    for disk in ({"path": evil, "format": "raw"}, {"path": good}):
        r = otto.post("/api/v1/vms", json={"name": "web1", "disks": [disk]})
        assert r.json()["code"] == "vm_exists", r.text
    # admins (host.path) name anything, as before
    assert ada.post("/api/v1/vms/nope/disks", json={"path": evil}).status_code == 404


def test_the_format_checked_is_the_format_the_service_is_given(
    api: dict[str, TestClient], chain: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test driver neither attaches disks nor creates VMs that virtkit can plan, so the
    services are wrapped to see what the routes hand them (and still called)."""
    otto = api["otto"]
    client = otto.app.state.ctx.client  # type: ignore[attr-defined]
    given: list[object] = []
    attach, create = client.disks.attach, client.vms.create

    def seen_attach(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs["format"])
        return attach(*args, **kwargs)

    def seen_create(spec: VMSpec, **kwargs: Any) -> Any:
        given.append([d.format for d in spec.disks])
        return create(spec, **kwargs)

    monkeypatch.setattr(client.disks, "attach", seen_attach)
    monkeypatch.setattr(client.vms, "create", seen_create)
    good, evil = str(chain["good"]), str(chain["evil"])
    otto.post("/api/v1/vms/web1/disks", json={"path": good})
    spec = {
        "name": "vkchain-vm",
        "disks": [{"size": "1G"}, {"path": good}, {"path": evil, "format": "raw"}],
    }
    r = otto.post("/api/v1/vms", json=spec)
    assert r.status_code == 202, r.text
    finished(otto, r.json()["id"])
    assert given == ["qcow2", [None, "qcow2", "raw"]]
    given.clear()
    api["ada"].post("/api/v1/vms/web1/disks", json={"path": good})
    assert given == [None]  # host.path: detected by the service, as before


def finished(c: TestClient, task_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task: dict[str, object] = c.get(f"/api/v1/tasks/{task_id}").json()
        if task["state"] in ("succeeded", "failed"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


# -- one file, one format: the same in-pool file may not be raw in one VM and qcow2 in another


def define_vm(
    client: Client, name: str, *disks: ResolvedDisk | Disk, transient: bool = False
) -> Callable[[], None]:
    """A VM on the test driver whose disks are ``disks`` (vda, vdb, ...: an element as it is);
    returns its undo."""
    dom = Domain.parse(TEST_DOMAIN)
    dom.name = name
    for index, disk in enumerate(disks):
        if isinstance(disk, ResolvedDisk):
            disk = disk_element(disk, "vd" + disk_letters(index))
        dom.disks.append(disk)
    if transient:
        guest = client.host.create_transient(dom.to_xml())
        return guest.destroy
    guest = client.host.define(dom.to_xml())
    return guest.undefine


TEST_DOMAIN = "<domain type='test'><memory>131072</memory><os><type>hvm</type></os></domain>"


@pytest.fixture
def vms(api: dict[str, TestClient]) -> Iterator[Callable[..., None]]:
    """Defines ``vkchain-`` VMs on the test driver (and removes them afterwards)."""
    client = api["otto"].app.state.ctx.client  # type: ignore[attr-defined]
    undo: list[Callable[[], None]] = []

    def make(name: str, *disks: ResolvedDisk | Disk, transient: bool = False) -> None:
        assert name.startswith("vkchain-")
        undo.append(define_vm(client, name, *disks, transient=transient))

    yield make
    for step in reversed(undo):
        step()


def clash(r: httpx.Response, field: str, path: str, vm: str, fmt: str) -> None:
    forbidden(r, field, path)
    assert f"VM {vm!r}" in r.json()["message"] and f"opens it as {fmt}" in r.json()["message"]


def past_the_check(r: httpx.Response) -> None:
    """A disk attach past every check, up to libvirt's (the test driver attaches no disks)."""
    assert r.status_code == 422 and r.json()["code"] == "unsupported", r.text


def test_a_file_one_vm_reads_as_qcow2_is_given_to_no_vm_raw(
    api: dict[str, TestClient], chain: dict[str, Path], pool: Path, vms: Callable[..., None]
) -> None:
    otto, ada = api["otto"], api["ada"]
    base, data = str(chain["base"]), str(pool / "data.img")  # data.img has no qcow2 magic
    vms("vkchain-b", ResolvedDisk(base, "qcow2", "virtio"), ResolvedDisk(data, "qcow2", "virtio"))
    r = otto.post("/api/v1/vms/web1/disks", json={"path": data})  # detected: raw
    clash(r, "path", data, "vkchain-b", "qcow2")
    assert "would be opened as writable raw" in r.json()["message"]
    disk = {"path": base, "format": "raw"}
    r = otto.post("/api/v1/vms", json={"name": "vkchain-a", "disks": [disk]})
    clash(r, "disks[0].path", base, "vkchain-b", "qcow2")
    # the VM itself too: vkchain-b's guest would write the header its own vdb follows
    clash(
        otto.post("/api/v1/vms/vkchain-b/disks", json={"path": data}),
        "path",
        data,
        "vkchain-b",
        "qcow2",
    )
    # read-only raw writes nothing; qcow2 as vkchain-b has it, another file, an admin: pass
    past_the_check(otto.post("/api/v1/vms/web1/disks", json={"path": data, "readonly": True}))
    past_the_check(otto.post("/api/v1/vms/web1/disks", json={"path": base}))
    other = pool / "vkchain-other.img"
    other.write_bytes(b"\0" * 512)
    past_the_check(otto.post("/api/v1/vms/web1/disks", json={"path": str(other)}))
    other.unlink()
    past_the_check(ada.post("/api/v1/vms/web1/disks", json={"path": data}))
    for who, spec in ((otto, {**disk, "readonly": True}), (ada, disk)):
        r = who.post("/api/v1/vms", json={"name": "web1", "disks": [spec]})
        assert r.json()["code"] == "vm_exists", r.text


def test_a_file_one_vm_writes_raw_is_given_to_no_vm_as_qcow2(
    api: dict[str, TestClient], chain: dict[str, Path], vms: Callable[..., None]
) -> None:
    """The roles swapped: the raw writer first; the file is a clean qcow2 (for now)."""
    otto, ada = api["otto"], api["ada"]
    base, good = str(chain["base"]), str(chain["good"])
    vms("vkchain-a", ResolvedDisk(base, "raw", "virtio"))
    r = otto.post("/api/v1/vms/web1/disks", json={"path": base})  # detected from its magic
    clash(r, "path", base, "vkchain-a", "writable raw")
    assert "would be opened as qcow2" in r.json()["message"]
    for fmt in ({}, {"format": "qcow2"}, {"format": "qcow2", "readonly": True}):
        r = otto.post("/api/v1/vms", json={"name": "web1", "disks": [{"path": base, **fmt}]})
        clash(r, "disks[0].path", base, "vkchain-a", "writable raw")
    # a qcow2 whose backing file is that file is refused too
    r = otto.post("/api/v1/vms/web1/disks", json={"path": good})
    clash(r, "path", good, "vkchain-a", "writable raw")
    assert f"(its backing file {base!r})" in r.json()["message"]
    r = otto.post("/api/v1/vms", json={"name": "web1", "disks": [{"path": base, "format": "raw"}]})
    assert r.json()["code"] == "vm_exists", r.text
    past_the_check(ada.post("/api/v1/vms/web1/disks", json={"path": base}))


def test_a_backing_file_a_shut_off_vm_reads_is_guarded_by_the_clone_check(
    api: dict[str, TestClient], chain: dict[str, Path], vms: Callable[..., None]
) -> None:
    """A shut-off VM's definition names its top image alone; the file below it, read from the
    header, is kept from being written by anyone (``volume_has_clones``)."""
    base, good = str(chain["base"]), str(chain["good"])
    vms("vkchain-b", ResolvedDisk(good, "qcow2", "virtio"))
    for who in ("otto", "ada"):
        r = api[who].post("/api/v1/vms/web1/disks", json={"path": base})
        assert r.status_code == 409 and r.json()["code"] == "volume_has_clones", r.text


def test_a_cdrom_and_a_readonly_raw_disk_do_not_count_a_running_vm_does(
    api: dict[str, TestClient], chain: dict[str, Path], vms: Callable[..., None]
) -> None:
    otto = api["otto"]
    base = str(chain["base"])
    cdrom = ResolvedDisk(base, "raw", "sata", device="cdrom", readonly=True)
    vms("vkchain-a", cdrom, ResolvedDisk(base, "raw", "virtio", readonly=True))
    past_the_check(otto.post("/api/v1/vms/web1/disks", json={"path": base}))
    # a VM that only runs (no persistent definition) counts by its live one
    vms("vkchain-live", ResolvedDisk(base, "raw", "virtio"), transient=True)
    r = otto.post("/api/v1/vms/web1/disks", json={"path": base})
    clash(r, "path", base, "vkchain-live", "writable raw")


def test_a_vm_disk_given_as_a_pool_volume_counts_by_the_volume_path(
    api: dict[str, TestClient], vms: Callable[..., None]
) -> None:
    otto = api["otto"]
    client = otto.app.state.ctx.client  # type: ignore[attr-defined]
    volume = client.pools.create_volume("vms", VolumeSpec(name="vkchain-vol.qcow2", size=1 << 20))
    disk = Disk()
    disk.type, disk.device, disk.driver_type = "volume", "disk", "qcow2"
    disk.source_pool, disk.source_volume, disk.target_dev = "vms", volume.name, "vda"
    try:
        vms("vkchain-v", disk)
        uses = client.pools.disk_uses()
        assert [(u.vm, u.path, u.format) for u in uses] == [
            ("vkchain-v", volume.path, "qcow2"),
            ("vkchain-v", volume.path, "qcow2"),  # live (shut off: the same) and persistent
        ]
        r = otto.post("/api/v1/vms/web1/disks", json={"path": volume.path})  # no file: raw
        clash(r, "path", volume.path, "vkchain-v", "qcow2")
    finally:
        client.pools.delete_volume("vms", volume.name)
