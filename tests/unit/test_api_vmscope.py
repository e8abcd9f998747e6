"""VM owners and ``api_vm_scope = own`` through the real app on libvirt's test driver: an
operator sees and acts on the VMs they own, and another's VM is a 404 like a missing one; their
tasks and the web pages follow the same rule; only admins give VMs away."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.apiclients import token_clients
from virtkit import Client, Settings
from virtkit.api.app import create_app

NODE = """<node>
  <domain type='test'>
    <name>vkscope-a</name>
    <memory>131072</memory>
    <os><type>hvm</type></os>
  </domain>
  <domain type='test'>
    <name>vkscope-b</name>
    <memory>131072</memory>
    <os><type>hvm</type></os>
  </domain>
</node>
"""
USERS = (("ada", "admin"), ("otto", "operator"), ("olga", "operator"), ("vera", "viewer"))


def _api(tmp_path: Path, scope: str) -> tuple[Client, dict[str, TestClient]]:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    settings = Settings(uri=f"test://{node}", state_dir=tmp_path / "state",
                        cache_dir=tmp_path / "cache", api_vm_scope=scope)  # fmt: skip
    client = Client(settings=settings)
    app = create_app(settings, client=client)
    clients = token_clients(client, app, USERS)
    return client, clients


@pytest.fixture
def own(tmp_path: Path) -> Iterator[dict[str, TestClient]]:
    client, clients = _api(tmp_path, "own")
    with clients["ada"]:  # runs the app's start-up and shut-down
        yield clients
    client.close()


def names(c: TestClient) -> list[str]:
    r = c.get("/api/v1/vms")
    assert r.status_code == 200, r.text
    return sorted(vm["name"] for vm in r.json())


def test_operators_see_and_act_on_their_own_vms_only(own: dict[str, TestClient]) -> None:
    ada, otto, olga, vera = (own[u] for u, _ in USERS)
    assert names(ada) == ["vkscope-a", "vkscope-b"]  # admins: every VM
    assert names(otto) == [] and names(vera) == []
    hidden = otto.post("/api/v1/vms/vkscope-a/pause")
    assert hidden.status_code == 404 and hidden.json()["code"] == "vm_not_found"
    assert hidden.json()["message"] == otto.get("/api/v1/vms/nosuchvm").json()["message"].replace(
        "nosuchvm", "vkscope-a"
    )  # the same answer as for a VM that does not exist: no name leaks

    given = ada.patch("/api/v1/vms/vkscope-a", json={"owner": "otto"})
    assert given.status_code == 200 and given.json()["changes"] == ["owner otto"], given.text
    assert names(otto) == ["vkscope-a"] and names(olga) == []
    assert otto.get("/api/v1/vms/vkscope-a").json()["owner"] == "otto"
    assert otto.post("/api/v1/vms/vkscope-a/pause").json()["state"] == "paused"
    assert otto.post("/api/v1/vms/vkscope-a/resume").json()["state"] == "running"
    assert olga.get("/api/v1/vms/vkscope-a").status_code == 404
    assert (
        olga.post("/api/v1/vms/vkscope-a/console/ticket", json={"kind": "serial"}).status_code
        == 404
    )

    # only admins give VMs away, to users who exist
    taken = otto.patch("/api/v1/vms/vkscope-a", json={"owner": "olga"})
    assert taken.status_code == 403 and taken.json()["code"] == "forbidden"
    assert ada.patch("/api/v1/vms/vkscope-a", json={"owner": "nobody1"}).status_code == 404
    assert otto.get("/api/v1/vms/vkscope-a").json()["owner"] == "otto"  # unchanged by those
    # an operator makes VMs for themselves only (refused before anything is made)
    spec = {"name": "vkscope-c", "memory": "64M", "disks": [{"size": "16M"}], "owner": "olga"}
    assert otto.post("/api/v1/vms", json=spec).status_code == 403

    # tasks: an operator's own only
    down = ada.post("/api/v1/vms/vkscope-b/shutdown", json={"timeout": 5, "force": True})
    assert down.status_code == 202
    task = down.json()["id"]
    assert task in [t["id"] for t in ada.get("/api/v1/tasks").json()]
    assert task not in [t["id"] for t in otto.get("/api/v1/tasks").json()]
    assert otto.get(f"/api/v1/tasks/{task}").status_code == 404
    assert otto.get(f"/api/v1/tasks/{task}/log").status_code == 404
    assert ada.get(f"/api/v1/tasks/{task}", params={"wait": 10}).json()["state"] == "succeeded"

    # taken back: gone from the operator's view again
    assert ada.patch("/api/v1/vms/vkscope-a", json={"owner": ""}).status_code == 200
    assert names(otto) == [] and ada.get("/api/v1/vms/vkscope-a").json()["owner"] is None


def test_the_web_pages_follow_the_same_rule(own: dict[str, TestClient]) -> None:
    ada = own["ada"]
    assert ada.patch("/api/v1/vms/vkscope-b", json={"owner": "otto"}).status_code == 200
    page = TestClient(ada.app, follow_redirects=False)
    r = page.post("/api/v1/login", json={"user": "otto", "password": "password-otto"})
    assert r.status_code == 200
    listing = page.get("/vms").text
    assert "vkscope-b" in listing and "vkscope-a" not in listing
    assert page.get("/vms/vkscope-b").status_code == 200
    assert page.get("/vms/vkscope-a").status_code == 404
    assert "vkscope-a" not in page.get("/").text
    ksm = own["otto"].get("/api/v1/host/ksm")  # the host's figures; per VM, their own only
    assert ksm.status_code == 200, ksm.text
    assert [v["name"] for v in ksm.json()["vms"]] == ["vkscope-b"]
    assert {v["name"] for v in ada.get("/api/v1/host/ksm").json()["vms"]} == {
        "vkscope-a",
        "vkscope-b",
    }


def test_with_scope_all_everyone_sees_every_vm(tmp_path: Path) -> None:
    client, clients = _api(tmp_path, "all")
    with clients["ada"]:
        assert names(clients["otto"]) == ["vkscope-a", "vkscope-b"]
        assert names(clients["vera"]) == ["vkscope-a", "vkscope-b"]
    client.close()
