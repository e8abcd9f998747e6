"""The REST API against a running ``virtkit serve`` on the private libvirtd, with a real guest:
every endpoint family, roles, CSRF, tokens, audit, tasks, the event stream, bad input."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PREFIX, Bed, tiny_spec, wait_for_text
from tests.integration.apiserver import PASSWORD, Server, running, wait_task

pytestmark = pytest.mark.integration

SEC = "vksec-"  # VMs of the host path tests


@pytest.fixture(scope="module")
def api(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from virtkit.services import storage

    with bed.client() as vk:  # the pool VM disks go into (the create makes it on demand)
        storage.ensure_pool(vk.host, bed.settings.storage_pool, bed.pool_dir)
    with running(bed, tmp_path_factory.mktemp("vkapi-state")) as server:
        for name, role in (("ada", "admin"), ("otto", "operator"), ("vera", "viewer")):
            server.add_user(name, role)
        yield server


@pytest.fixture
def admin(api: Server) -> Iterator[httpx.Client]:
    with api.client("ada") as c:
        yield c


@pytest.fixture
def operator(api: Server) -> Iterator[httpx.Client]:
    with api.client("otto") as c:
        yield c


@pytest.fixture
def viewer(api: Server) -> Iterator[httpx.Client]:
    with api.client("vera") as c:
        yield c


def test_nothing_answers_without_authentication(api: Server) -> None:
    with api.client() as anon:
        assert anon.get("/healthz").json()["libvirt"] is True
        for path in ("/api/v1/vms", "/api/v1/tasks", "/api/v1/host", "/api/v1/events"):
            r = anon.get(path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "unauthenticated"
        bogus = anon.get("/api/v1/vms", headers={"Authorization": "Bearer vkt_nope"})
        assert bogus.status_code == 401
        doc = anon.get("/api/v1/openapi.json")
        assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.")


def test_a_vm_from_create_to_delete(
    api: Server, bed: Bed, operator: httpx.Client, admin: httpx.Client, viewer: httpx.Client
) -> None:
    """An admin creates the tiny guest (its kernel is a host path: ``host.path``), an operator
    runs it: looks, pauses, changes, shuts down, deletes."""
    name = PREFIX + "api-" + secrets.token_hex(3)
    try:
        ci = {"user": "vk", "password": "vk-secret-pw-1", "packages": ["htop"]}
        spec = tiny_spec(bed, name, cloud_init=ci)
        r = admin.post("/api/v1/vms", params={"start": True}, json=spec)
        assert r.status_code == 202, r.text
        assert r.headers["location"].endswith(f"/api/v1/tasks/{r.json()['id']}")
        task = wait_task(operator, r.json()["id"])  # operators see every task
        assert task["state"] == "succeeded", task
        assert task["result"]["name"] == name and task["kind"] == "vm.create"
        log = operator.get(f"/api/v1/tasks/{task['id']}/log").json()
        assert log[0]["line"] == "started" and len(log) >= 3
        wait_for_text(bed, name)

        listed = {vm["name"]: vm for vm in viewer.get("/api/v1/vms").json()}
        assert listed[name]["state"] == "running"
        assert listed[name]["owner"] == "ada"  # who made it through the API
        assert viewer.get(f"/api/v1/vms/{name}").json()["serial_console"] is True
        assert "<domain" in viewer.get(f"/api/v1/vms/{name}/xml").text
        assert viewer.get(f"/api/v1/vms/{name}/disks").status_code == 200
        assert viewer.get(f"/api/v1/vms/{name}/nics").json() == []
        seed = viewer.get(f"/api/v1/vms/{name}/cloud-init").json()  # read through libvirt
        assert seed["format"] == "nocloud" and seed["source"].endswith(f"{name}-seed.iso")
        user_data = next(f for f in seed["files"] if f["path"] == "user-data")
        assert "name: vk" in user_data["text"] and "htop" in user_data["text"]
        assert "$6$" not in user_data["text"] and "users[1].passwd" in user_data["hidden"]

        # a viewer may look, not act; no console for a viewer
        denied = viewer.post(f"/api/v1/vms/{name}/stop")
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
        assert viewer.get(f"/api/v1/vms/{name}/console-log").status_code == 403
        assert "VIRTKIT-TINY-BOOTED" in operator.get(f"/api/v1/vms/{name}/console-log").text
        assert viewer.get(f"/api/v1/vms/{name}").json()["state"] == "running"

        paused = operator.post(f"/api/v1/vms/{name}/pause")
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        again = operator.post(f"/api/v1/vms/{name}/pause")
        assert again.status_code == 409, again.text
        assert operator.post(f"/api/v1/vms/{name}/resume").json()["state"] == "running"

        changed = operator.patch(f"/api/v1/vms/{name}", json={"memory": "192M"})
        assert changed.status_code == 200, changed.text
        assert any("memory" in line for line in changed.json()["changes"])

        # the same name again: 409 at once, not a task that fails
        dup = admin.post("/api/v1/vms", json=tiny_spec(bed, name))
        assert dup.status_code == 409 and dup.json()["code"] == "vm_exists"

        down = operator.post(f"/api/v1/vms/{name}/shutdown", json={"timeout": 5, "force": True})
        assert down.status_code == 202
        done = wait_task(operator, down.json()["id"])
        assert done["state"] == "succeeded" and done["result"]["result"].startswith(
            ("shutdown", "forced")
        ), done
        assert viewer.get(f"/api/v1/vms/{name}").json()["state"] == "shutoff"

        preview = operator.get(f"/api/v1/vms/{name}/delete-preview").json()
        gone = operator.delete(f"/api/v1/vms/{name}", params={"remove_storage": True})
        assert gone.status_code == 200, gone.text
        assert gone.json()["removed"] == preview
        assert operator.get(f"/api/v1/vms/{name}").status_code == 404

        audit = admin.get("/api/v1/audit", params={"user": "otto", "limit": 100}).json()
        actions = {(e["action"], e["target"]) for e in audit}
        assert ("POST /api/v1/vms/{name}/pause", name) in actions, actions
        assert ("DELETE /api/v1/vms/{name}", name) in actions
        made = admin.get("/api/v1/audit", params={"user": "ada", "action": "POST /api/v1/vms"})
        assert ("POST /api/v1/vms", name) in {(e["action"], e["target"]) for e in made.json()}
        assert operator.get("/api/v1/audit").status_code == 403
    finally:
        with bed.client() as client:
            if any(vm.name == name for vm in client.vms.list()):
                client.vms.delete(name, force=True, remove_storage=True)


def test_a_failed_create_is_a_failed_task_and_leaves_nothing(bed: Bed, admin: httpx.Client) -> None:
    name = PREFIX + "api-" + secrets.token_hex(3)
    spec = tiny_spec(bed, name, disks=[{"size": "1G"}], kernel="/nonexistent/vmlinuz")
    r = admin.post("/api/v1/vms", json=spec)
    assert r.status_code == 202, r.text
    task = wait_task(admin, r.json()["id"])
    assert task["state"] == "failed" and task["error"]["code"], task
    assert "/nonexistent/vmlinuz" in task["error"]["message"]
    assert admin.get(f"/api/v1/vms/{name}").status_code == 404
    assert not list(bed.pool_dir.glob(f"{name}-*"))


def test_operators_name_host_paths_only_inside_storage_pools(
    bed: Bed, operator: httpx.Client, admin: httpx.Client
) -> None:
    """A kernel, a disk, a CD-ROM named by host path: 403 ``host_path_forbidden`` for an
    operator (naming the field and the path) and nothing made, unless the file lies in an
    active storage pool; ``..`` and symlinks do not lead out of the pool."""
    name = SEC + secrets.token_hex(3)
    pool = bed.settings.storage_pool
    volume = f"{name}-data.qcow2"
    link = bed.pool_dir / f"{name}-link.img"
    try:
        escapes = [
            ("kernel", bed.guest.kernel, tiny_spec(bed, name)),
            ("disks[0].path", "/etc/shadow", {"name": name, "disks": [{"path": "/etc/shadow"}]}),
            ("cdrom", "/etc/hostname", {"name": name, "cdrom": "/etc/hostname"}),
        ]
        dotdot = f"{bed.pool_dir}/../../../../../../etc/shadow"
        escapes.append(("disks[0].path", dotdot, {"name": name, "disks": [{"path": dotdot}]}))
        link.symlink_to("/etc/shadow")
        escapes.append(("disks[0].path", str(link), {"name": name, "disks": [{"path": str(link)}]}))
        for field, path, spec in escapes:
            r = operator.post("/api/v1/vms", json=spec)
            assert r.status_code == 403, r.text
            assert r.json()["code"] == "host_path_forbidden", r.text
            assert field in r.json()["message"] and repr(path) in r.json()["message"]
            assert operator.get(f"/api/v1/vms/{name}").status_code == 404
        assert operator.get("/api/v1/tasks", params={"target": name}).json() == []

        # a volume of the pool is the operator's to use: create, attach, then no escape
        made = admin.post(f"/api/v1/pools/{pool}/volumes", json={"name": volume, "size": "16M"})
        assert made.status_code == 201, made.text
        path = made.json()["path"]
        r = operator.post("/api/v1/vms", json={"name": name, "disks": [{"path": path}]})
        assert r.status_code == 202, r.text
        assert wait_task(operator, r.json()["id"])["state"] == "succeeded"
        for route, body in (("disks", {"path": "/etc/shadow"}), ("cdrom", {"iso": str(link)})):
            refused = operator.post(f"/api/v1/vms/{name}/{route}", json=body)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "host_path_forbidden"
        sources = [d["source"] for d in operator.get(f"/api/v1/vms/{name}/disks").json()]
        assert sources == [path], sources
        assert operator.delete(f"/api/v1/vms/{name}").status_code == 200
    finally:
        link.unlink(missing_ok=True)
        with bed.client() as client:
            if any(vm.name == name for vm in client.vms.list()):
                client.vms.delete(name, force=True)
        admin.delete(f"/api/v1/pools/{pool}/volumes/{volume}")


def test_roles_guard_storage_networks_and_the_host(
    operator: httpx.Client, viewer: httpx.Client, admin: httpx.Client
) -> None:
    net = {"name": PREFIX + "apinet", "kind": "isolated"}
    refused = operator.post("/api/v1/networks", json=net)
    assert refused.status_code == 403, refused.text
    assert "operator" in refused.json()["message"]
    assert viewer.post("/api/v1/pools/default/refresh").status_code == 403
    assert operator.patch("/api/v1/host/ksm", json={"run": True}).status_code == 403
    assert operator.get("/api/v1/users").status_code == 403
    for path in ("/api/v1/pools", "/api/v1/networks", "/api/v1/images", "/api/v1/host"):
        assert viewer.get(path).status_code == 200, path
    assert admin.get("/api/v1/host").json()["kvm"] is not None
    assert admin.get("/api/v1/users").status_code == 200


def test_networks_and_storage_through_the_api(admin: httpx.Client, bed: Bed) -> None:
    net = PREFIX + "apinet" + secrets.token_hex(2)
    made = admin.post("/api/v1/networks", json={"name": net, "kind": "isolated", "start": False})
    assert made.status_code == 201, made.text
    try:
        assert admin.get(f"/api/v1/networks/{net}").json()["name"] == net
        changed = admin.patch(f"/api/v1/networks/{net}", params={"autostart": False})
        assert changed.status_code == 200, changed.text
    finally:
        assert admin.delete(f"/api/v1/networks/{net}").status_code == 204
    assert admin.get(f"/api/v1/networks/{net}").status_code == 404

    pool = bed.settings.storage_pool
    assert admin.get(f"/api/v1/pools/{pool}").status_code == 200
    vol = PREFIX + "apivol" + secrets.token_hex(2) + ".qcow2"
    created = admin.post(f"/api/v1/pools/{pool}/volumes", json={"name": vol, "size": "16M"})
    assert created.status_code == 201, created.text
    try:
        grown = admin.post(f"/api/v1/pools/{pool}/volumes/{vol}/resize", json={"size": "32M"})
        assert grown.status_code == 200 and grown.json()["capacity"] == 32 * 1024 * 1024
        clone = admin.post(
            f"/api/v1/pools/{pool}/volumes/{vol}/clone", json={"name": f"c-{vol}", "linked": True}
        )
        assert clone.status_code == 202
        task = wait_task(admin, clone.json()["id"])
        assert task["state"] == "succeeded", task
        assert task["result"]["backing"].endswith(vol)
        in_use = admin.delete(f"/api/v1/pools/{pool}/volumes/{vol}")
        assert in_use.status_code == 409, in_use.text  # a clone is based on it
        assert admin.delete(f"/api/v1/pools/{pool}/volumes/c-{vol}").status_code == 200
    finally:
        admin.delete(f"/api/v1/pools/{pool}/volumes/c-{vol}")
        admin.delete(f"/api/v1/pools/{pool}/volumes/{vol}")


def test_sessions_need_the_csrf_token(api: Server) -> None:
    with api.client() as browser:
        wrong = browser.post("/api/v1/login", json={"user": "vera", "password": "nope-nope"})
        assert wrong.status_code == 401
        ok = browser.post("/api/v1/login", json={"user": "vera", "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        csrf = ok.json()["csrf_token"]
        assert browser.get("/api/v1/vms").status_code == 200  # the cookie is enough to read
        no_csrf = browser.post("/api/v1/logout")
        assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "csrf_failed"
        assert browser.post("/api/v1/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert browser.get("/api/v1/vms").status_code == 401


def test_a_revoked_token_is_refused(api: Server, admin: httpx.Client) -> None:
    made = admin.post("/api/v1/tokens", json={"name": "short-lived"})
    assert made.status_code == 201, made.text
    secret, token_id = made.json()["secret"], made.json()["token"]["id"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert admin.get("/api/v1/whoami", headers=headers).json()["user"] == "ada"
    assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    assert admin.get("/api/v1/whoami", headers=headers).status_code == 401


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    api: Server, bed: Bed, admin: httpx.Client
) -> None:
    before = sorted(vm["name"] for vm in admin.get("/api/v1/vms").json())
    headers = {"Content-Type": "application/json"}
    broken = admin.post("/api/v1/vms", content=b'{"name": "x", ', headers=headers)
    assert broken.status_code == 422 and "malformed JSON" in broken.json()["message"]
    unknown = admin.post("/api/v1/vms", json={**tiny_spec(bed, "vktest-x"), "colour": "red"})
    assert unknown.status_code == 422 and "colour: unknown field" in unknown.json()["message"]
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    huge = admin.post("/api/v1/vms", content=body, headers=headers)
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
    for bad in ("..%2F..%2Fetc", "a%20b", "%2e%2e"):
        r = admin.get(f"/api/v1/vms/{bad}")
        assert r.status_code in (404, 422), (bad, r.status_code, r.text)
        assert set(r.json()) == {"code", "message", "detail"}
    traversal = admin.post("/api/v1/vms", json=tiny_spec(bed, "../../etc/x"))
    assert traversal.status_code == 422 and "name" in traversal.json()["message"]
    not_a_number = admin.get("/api/v1/tasks", params={"limit": "many"})
    assert not_a_number.status_code == 422
    assert admin.get("/api/v1/tasks/does-not-exist").status_code == 404
    assert sorted(vm["name"] for vm in admin.get("/api/v1/vms").json()) == before


def test_the_event_stream_carries_lifecycle_and_task_events(
    api: Server, bed: Bed, operator: httpx.Client, admin: httpx.Client
) -> None:
    name = PREFIX + "api-" + secrets.token_hex(3)
    seen: list[tuple[str, dict[str, object]]] = []
    ready = threading.Event()

    def listen() -> None:
        with (
            api.client("otto") as c,
            c.stream("GET", "/api/v1/events", params={"timeout": 60}, timeout=90) as r,
        ):
            kind = None
            for line in r.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind:
                    seen.append((kind, json.loads(line.removeprefix("data: "))))
                    if kind == "vm" and seen[-1][1].get("event") == "started":
                        return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert ready.wait(10)
    try:
        r = admin.post("/api/v1/vms", params={"start": True}, json=tiny_spec(bed, name))
        assert r.status_code == 202
        reader.join(60)
        kinds = {(k, d.get("vm") or d.get("kind")) for k, d in seen}
        assert ("vm", name) in kinds, seen
        assert ("task", "vm.create") in kinds, seen
        assert any(k == "vm" and d["event"] == "started" for k, d in seen)
    finally:
        wait_task(operator, r.json()["id"])
        operator.delete(f"/api/v1/vms/{name}", params={"force": True, "remove_storage": True})


def test_tasks_of_a_dead_service_are_failed_and_cleaned_up(
    api: Server, bed: Bed, tmp_path: Path
) -> None:
    """The store survives the service; a task that ran in a process that is gone is marked
    failed on the next start and what it made (here: its first disk) is removed."""
    from virtkit.services.store import Store
    from virtkit.services.tasks import SCHEMA  # noqa: F401 -- registers the tasks table

    name = PREFIX + "api-" + secrets.token_hex(3)
    pool = bed.settings.storage_pool
    with bed.client() as client:
        client.pools.create_volume(pool, _volume_spec(f"{name}-disk0.qcow2"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    store = Store(api.state_dir / "virtkit.db")
    with store.db() as db:
        db.execute(
            "INSERT INTO tasks (id, kind, target, user, state, created, started, owner, recovery)"
            " VALUES (?, 'vm.create', ?, 'otto', 'running', ?, ?, ?, ?)",
            ("deadbeef" + secrets.token_hex(4), name, time.time(), time.time(),
             f"{__import__('socket').gethostname()}:{dead.pid}", json.dumps({"vm": name})),
        )  # fmt: skip
    api.stop()
    api.start()
    with api.client("otto") as c:
        failed = [t for t in c.get("/api/v1/tasks", params={"target": name}).json()]
        assert len(failed) == 1 and failed[0]["state"] == "failed", failed
        assert failed[0]["error"]["code"] == "service_restarted"
        assert "removed" in failed[0]["error"]["message"]
    assert not list(bed.pool_dir.glob(f"{name}-*"))


def _volume_spec(name: str) -> object:
    from virtkit.specs.storage import VolumeSpec

    return VolumeSpec(name=name, size="16M")  # type: ignore[arg-type]
