"""The API routes that take host paths (VM create, disk attach, CD-ROM media) refuse an operator's
path outside the storage pools with 403 ``host_path_forbidden`` before anything is done; the
real app on libvirt's test driver, with a directory pool in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from virtkit import Client, Settings
from virtkit.api.app import create_app
from virtkit.specs.vm import VMSpec

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
    clients = {}
    for user, role in (("ada", "admin"), ("otto", "operator")):
        client.users.add(user, role, "password-" + user)
        _, secret = client.users.create_token(user, "test", None)
        clients[user] = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
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
