"""The snapshot routes through the real app on libvirt's test driver (internal snapshots are
metadata there): permissions, tasks, and revert/delete refused without confirmation. The data
round trips run on real guests in tests/integration/test_snapshots.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_api_endpoints import Api, _api, error
from virtkit.errors import InvalidInput
from virtkit.specs.snapshot import SnapshotView, tree_order
from virtkit.xml.domain import Domain

SMALL = """<domain type='test'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/var/lib/libvirt/images/vkep.qcow2'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


@pytest.fixture
def snap_api(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    api = _api(tmp_path)
    dom = Domain.parse(SMALL)
    name = "vkep-snap-" + secrets.token_hex(3)
    dom.name = name
    guest = api.client.host.define(dom.to_xml())
    with api.ada:
        yield api, name
    guest.undefine()
    api.client.close()


def _finish(api: Api, r: Any) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    done: dict[str, Any] = api.otto.get(
        f"/api/v1/tasks/{r.json()['id']}", params={"wait": 10}
    ).json()
    assert done["state"] == "succeeded", done
    return done


def test_snapshot_routes_take_list_revert_and_delete(snap_api: tuple[Api, str]) -> None:
    api, vm = snap_api
    base = f"/api/v1/vms/{vm}/snapshots"
    assert error(api.vera.post(base, json={"name": "s1", "kind": "internal"}), 403)
    done = _finish(api, api.otto.post(base, json={"name": "s1", "kind": "internal"}))
    assert done["result"]["snapshot"]["kind"] == "internal"
    [listed] = api.vera.get(base).json()
    assert listed["name"] == "s1" and listed["current"] and listed["disks"][0]["kind"] == "internal"
    assert api.vera.get(f"{base}/s1").json()["vm"] == vm

    plan = api.vera.get(f"{base}/s1/revert").json()
    assert plan["state_after"] == "shutoff" and plan["loses"]
    assert error(api.otto.post(f"{base}/s1/revert", json={}), 422) == "confirmation_required"
    assert error(api.vera.post(f"{base}/s1/revert", json={"confirm": True}), 403)
    _finish(api, api.otto.post(f"{base}/s1/revert", json={"confirm": True}))

    assert api.vera.get(f"{base}/s1/delete").json()["kind"] == "internal"
    assert error(api.otto.delete(f"{base}/s1"), 422) == "confirmation_required"
    _finish(api, api.otto.delete(f"{base}/s1", params={"confirm": "true"}))
    assert api.vera.get(base).json() == []


def test_snapshot_routes_refuse_bad_input(snap_api: tuple[Api, str]) -> None:
    api, vm = snap_api
    base = f"/api/v1/vms/{vm}/snapshots"
    assert error(api.vera.get(f"{base}/nope"), 404) == "snapshot_not_found"
    assert error(api.otto.post(base, json={"name": "a b"}), 422) == "invalid_name"
    assert error(api.otto.post(base, json={"name": "s", "color": "red"}), 422)
    assert error(api.vera.get("/api/v1/vms/vkep-missing/snapshots"), 404)
    # an internal snapshot with memory of a VM that does not run: there is no memory
    r = api.otto.post(base, json={"name": "m", "kind": "internal", "memory": True})
    done = api.otto.get(f"/api/v1/tasks/{r.json()['id']}", params={"wait": 10}).json()
    assert done["state"] == "failed" and done["error"]["code"] == "vm_not_running"


def _page(api: Api, user: str, path: str) -> str:
    """A page as ``user`` sees it in a browser session (pages take no tokens)."""
    with TestClient(api.ada.app) as browser:
        r = browser.post("/api/v1/login", json={"user": user, "password": "password-" + user})
        assert r.status_code == 200, r.text
        page = browser.get(path)
        assert page.status_code == 200, page.text
        return page.text


def _view(
    name: str, parent: str | None, children: list[str], current: bool = False
) -> SnapshotView:
    return SnapshotView(
        name=name, vm="v", kind="external", state="running", memory=False, created=0,
        parent=parent, children=children, current=current,
    )  # fmt: skip


def test_the_cli_draws_the_snapshot_tree() -> None:
    snaps = [
        _view("a", None, ["b", "d"]),
        _view("b", "a", ["c"]),
        _view("c", "b", []),
        _view("d", "a", [], current=True),
    ]
    assert [prefix + s.name for prefix, s in tree_order(snaps)] == [
        "a", "├─ b", "│  └─ c", "└─ d",
    ]  # fmt: skip


def test_the_vm_page_lists_snapshots_with_what_revert_and_delete_destroy(
    snap_api: tuple[Api, str],
) -> None:
    api, vm = snap_api
    base = f"/api/v1/vms/{vm}/snapshots"
    _finish(api, api.otto.post(base, json={"name": "p1", "kind": "internal"}))
    _finish(api, api.otto.post(base, json={"name": "p2", "kind": "internal", "description": "x"}))
    html = _page(api, "ada", f"/vms/{vm}")
    assert "p1" in html and "└─ " in html and "(current)" in html
    assert f'data-api="POST api/v1/vms/{vm}/snapshots/p1/revert"' in html
    assert "It loses: every disk&#39;s changes since the snapshot was taken" in html
    assert f'data-api="DELETE api/v1/vms/{vm}/snapshots/p2?confirm=true"' in html
    assert 'data-api-form="POST api/v1/vms/' in html
    viewer = _page(api, "vera", f"/vms/{vm}")
    assert "p2" in viewer and "/revert" not in viewer and "Take snapshot" not in viewer


def test_an_internal_snapshot_of_a_raw_disk_is_refused_and_nothing_is_made(
    snap_api: tuple[Api, str],
) -> None:
    api, vm = snap_api
    guest = api.client.host.lookup(vm)
    dom = guest.config()
    dom.disks[0].driver_type = "raw"
    api.client.host.define(dom.to_xml())
    with pytest.raises(InvalidInput) as refused:
        api.client.snapshots.create(vm, "r1", kind="internal")
    assert refused.value.code == "snapshot_needs_qcow2" and "vda" in refused.value.message
    assert api.client.snapshots.list(vm) == []
    for disk in list(dom.disks):
        dom.disks.remove(disk)
    api.client.host.define(dom.to_xml())
    with pytest.raises(InvalidInput) as empty:
        api.client.snapshots.create(vm, "r2", kind="internal")
    assert empty.value.code == "no_disks"
    with pytest.raises(InvalidInput) as bad:
        api.client.snapshots.create(vm, "../x")
    assert bad.value.code == "invalid_name"
