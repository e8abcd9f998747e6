"""The backup routes through the real app on libvirt's test driver: permissions, shapes, the
explicit confirmation a restore over a VM needs, schedules, and the OpenAPI document. (The
backups themselves need QEMU: tests/integration/test_backup.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_api_endpoints import Api, _api, error
from virtkit.services import backupimg
from virtkit.services.backupset import BackupRoot, publish, write_manifest
from virtkit.specs.backup import BackupDisk, BackupSet

VM = "test"  # test:///default's own domain


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = _api(tmp_path)
    with made.ada:
        yield made
    made.client.close()


def _a_set(api: Api, set_id: str = "20261204T000000Z-full") -> BackupSet:
    root = BackupRoot(api.client.settings.backup_path)
    partial = root.partial_dir(VM, set_id)
    partial.mkdir(parents=True)
    image = partial / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    disk = BackupDisk(target="vda", file="vda.qcow2", format="qcow2", source="/guest/disk",
                      source_format="qcow2", virtual_size=1 << 20,
                      file_size=image.stat().st_size, sha256=backupimg.sha256(image))  # fmt: skip
    made = BackupSet(id=set_id, vm=VM, vm_uuid="u", kind="full", method="backup-api",
                     checkpoint=None, started=1.0, finished=2.0, disks=[disk],
                     domain_xml="<domain/>", virtkit_version="0")  # fmt: skip
    write_manifest(partial, made)
    publish(partial, root.set_dir(VM, set_id))
    return made


def _task(api: Api, r: Any) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/api/v1/tasks/{r.json()['id']}"
    done = api.ada.get(r.headers["Location"], params={"wait": 30})
    body: dict[str, Any] = done.json()
    return body


def test_list_get_verify_and_prune(api: Api) -> None:
    assert api.vera.get(f"/api/v1/vms/{VM}/backups").json() == []
    made = _a_set(api)
    listed = api.vera.get(f"/api/v1/vms/{VM}/backups").json()
    assert [s["id"] for s in listed] == [made.id] and listed[0]["disks"][0]["target"] == "vda"
    one = api.vera.get(f"/api/v1/vms/{VM}/backups/{made.id}").json()
    assert one["kind"] == "full" and one["path"].endswith(made.id)
    assert error(api.vera.get(f"/api/v1/vms/{VM}/backups/nope"), 404) == "backup_not_found"
    checked = api.vera.post(f"/api/v1/vms/{VM}/backups/{made.id}/verify").json()
    assert checked["ok"] and checked["chain"] == [made.id]
    keep = {"keep_last": 1}
    assert error(api.vera.post(f"/api/v1/vms/{VM}/backups-prune", json=keep), 403)
    pruned = api.otto.post(f"/api/v1/vms/{VM}/backups-prune",
                           json={**keep, "dry_run": True}).json()  # fmt: skip
    assert pruned == {"vm": VM, "kept": [made.id], "removed": [], "checkpoints_removed": [],
                      "dry_run": True}  # fmt: skip
    assert error(api.otto.post(f"/api/v1/vms/{VM}/backups-prune", json={"keep_last": 0}), 422)


def test_a_backup_is_a_task_and_says_why_it_failed(api: Api) -> None:
    assert error(api.vera.post(f"/api/v1/vms/{VM}/backups", json={}), 403)
    assert error(api.otto.post("/api/v1/vms/nope/backups", json={}), 404) == "vm_not_found"
    assert error(api.otto.post(f"/api/v1/vms/{VM}/backups", json={"fast": 1}), 422)
    task = _task(api, api.otto.post(f"/api/v1/vms/{VM}/backups", json={"full": True}))
    assert task["kind"] == "backup.create" and task["state"] == "failed"
    # the test driver's disk is no file qemu-img can read
    assert task["error"]["code"] == "invalid_image", task["error"]


def test_a_restore_over_the_vm_must_be_asked_for(api: Api) -> None:
    made = _a_set(api)
    url = f"/api/v1/vms/{VM}/backups/{made.id}"
    preview = api.vera.get(f"{url}/restore-preview").json()
    assert preview["state"] == "running" and set(preview["overwrites"]) == {"vda"}
    assert error(api.vera.post(f"{url}/restore", json={"overwrite": True}), 403)
    assert error(api.otto.post(f"{url}/restore", json={}), 422) == "confirmation_required"
    assert error(api.otto.post(f"{url}/restore", json={"new_name": "test"}), 409) == "vm_exists"
    assert error(api.otto.post(f"{url}/restore", json={"new_name": "bad name"}), 422)
    task = _task(api, api.otto.post(f"{url}/restore", json={"overwrite": True}))
    assert task["kind"] == "backup.restore" and task["state"] == "failed"
    assert task["error"]["code"] == "vm_running"  # without force, a running VM is refused


def test_schedules(api: Api) -> None:
    body = {"tag": "prod", "cron": "30 2 * * *", "retention": {"keep_last": 2, "keep_daily": 7}}
    assert error(api.vera.post("/api/v1/backup-schedules", json=body), 403)
    made = api.otto.post("/api/v1/backup-schedules", json=body)
    assert made.status_code == 201, made.text
    view = made.json()
    assert view["tag"] == "prod" and view["retention"]["keep_daily"] == 7
    assert [v["id"] for v in api.vera.get("/api/v1/backup-schedules").json()] == [view["id"]]
    bad = {**body, "cron": "61 * * * *"}
    assert error(api.otto.post("/api/v1/backup-schedules", json=bad), 422) == "invalid_spec"
    both = {**body, "vm": VM}
    assert error(api.otto.post("/api/v1/backup-schedules", json=both), 422) == "invalid_schedule"
    assert api.otto.delete(f"/api/v1/backup-schedules/{view['id']}").json()["id"] == view["id"]
    assert error(api.otto.delete(f"/api/v1/backup-schedules/{view['id']}"), 404)


def test_openapi_has_the_backup_routes(api: Api) -> None:
    paths = api.ada.get("/api/v1/openapi.json").json()["paths"]
    for path in (
        "/api/v1/vms/{name}/backups",
        "/api/v1/vms/{name}/backups/{set_id}/restore",
        "/api/v1/vms/{name}/backups/{set_id}/verify",
        "/api/v1/backup-schedules",
    ):
        assert path in paths, path
