"""``virtkit plan|apply|drift`` on the real daemon with tiny guests (issue 18): create, no-op,
memory changed live, a NIC added, a tag renamed, prune, drift after a change behind virtkit's
back, and a failure mid-apply rolled back. Only what carries the site's mark is touched."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import VIRTKIT, Bed, tiny_spec
from virtkit import Client, parse_vm_spec
from virtkit.errors import VirtkitError
from virtkit.specs.states import VMState
from virtkit.xml.domain import Domain

pytestmark = pytest.mark.integration

SITE = "vktest-site"
POOL = "vktest-sitepool"
NET = "vktest-sitenet"
VMS = ("vktest-site-1", "vktest-site-2")
MiB = 1024 * 1024


def run(bed: Bed, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [VIRTKIT, *args], env=bed.env(), capture_output=True, text=True, timeout=300
    )
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def site_file(bed: Bed, path: Path, **vm: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "vktest-site-{n}",
        "replicas": 2,
        "memory": "192M",
        "kernel": bed.guest.kernel,
        "initrd": bed.guest.initrd,
        "cmdline": bed.guest.cmdline,
        "tags": ["role=web"],
        "nics": [{"network": NET}],
    }
    spec.update(vm)
    doc = {
        "site": SITE,
        "pools": [{"name": POOL, "path": str(bed.daemon.shared / "sitepool")}],
        "networks": [{"name": NET, "kind": "isolated"}],
        "vms": [spec],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def cleanup(bed: Bed) -> Iterator[None]:
    yield
    with bed.client() as vk:
        for name in VMS:
            with contextlib.suppress(VirtkitError):
                vk.vms.delete(name, force=True, remove_storage=True)
        with contextlib.suppress(VirtkitError):
            vk.networks.delete(NET)
        for pool in (POOL, "vktest-sitep1", "vktest-sitep2", "vktest-sitep3"):
            with contextlib.suppress(VirtkitError):
                vk.pools.delete_pool(pool, delete_dir=True)
    shutil.rmtree(bed.daemon.shared / "sitepool", ignore_errors=True)


def plan_json(bed: Bed, path: Path, *extra: str) -> dict[str, Any]:
    return json.loads(run(bed, "plan", "-f", str(path), "--json", *extra).stdout)


def changes(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["action"], c["kind"], c["name"]) for c in plan["changes"]]


def test_plan_apply_cycles(bed: Bed, vk: Client, vm_name: str, tmp_path: Path,
                           cleanup: None) -> None:  # fmt: skip
    # a VM of nobody's: shown as not of this site, never touched
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))
    path = site_file(bed, tmp_path / "site.yaml")

    # create: pool and network before the VMs, the VMs side by side
    first = plan_json(bed, path)
    assert changes(first) == [("create", "pool", POOL), ("create", "network", NET),
                              ("create", "vm", VMS[0]), ("create", "vm", VMS[1])]  # fmt: skip
    assert {"kind": "vm", "name": vm_name, "host": "default", "managed_by": None} in first[
        "unmanaged"
    ]
    applied = run(bed, "apply", "-f", str(path))
    assert f"+ vm {VMS[0]} on default: created and started" in applied.stdout
    assert "Applied 4 change(s)" in applied.stdout
    for name in VMS:
        assert vk.vms.get(name).state is VMState.RUNNING
    assert (bed.daemon.shared / "sitepool").is_dir()

    # no-op, twice over
    assert plan_json(bed, path)["changes"] == []
    again = run(bed, "apply", "-f", str(path))
    assert "No changes: the hosts match" in again.stdout
    assert run(bed, "plan", "-f", str(path), "--exit-code", ok=False).returncode == 0

    # memory, live (below what the guests started with)
    site_file(bed, path, memory="160M")
    plan = plan_json(bed, path)
    assert changes(plan) == [("update", "vm", VMS[0]), ("update", "vm", VMS[1])]
    assert plan["changes"][0]["details"] == ["memory 192 MiB -> 160 MiB (live)"]
    out = run(bed, "apply", "-f", str(path)).stdout
    assert "memory: 160 MiB now (balloon) and from the next start" in out
    config = Domain.parse(vk.vms.xml(VMS[0], inactive=True))
    assert (config.current_memory_kib or 0) * 1024 == 160 * MiB
    assert plan_json(bed, path)["changes"] == []

    # a second NIC, hot-plugged
    site_file(bed, path, memory="160M", nics=[{"network": NET}, {"network": NET}])
    plan = plan_json(bed, path)
    assert plan["changes"][0]["details"] == [f"NIC on network {NET} (hot-plugged)"]
    run(bed, "apply", "-f", str(path))
    for name in VMS:
        assert len(vk.nics.list(name)) == 2
        live = Domain.parse(vk.vms.xml(name))
        assert len(list(live.interfaces)) == 2  # in the running VM, not only its definition
    assert plan_json(bed, path)["changes"] == []

    # a tag renamed
    site_file(bed, path, memory="160M", nics=[{"network": NET}, {"network": NET}],
              tags=["role=frontend"])  # fmt: skip
    plan = plan_json(bed, path)
    assert plan["changes"][0]["details"] == ["tags role=web -> role=frontend"]
    run(bed, "apply", "-f", str(path))
    listed = {v.name: v.tags for v in vk.vms.list()}
    assert listed[VMS[0]] == ["role=frontend"] and listed[VMS[1]] == ["role=frontend"]

    # drift: memory changed behind virtkit's back (as virsh setmem --config would)
    vk.host.lookup(VMS[0]).set_memory(150 * 1024, config=True)
    drift = run(bed, "drift", "-f", str(path), "--json", ok=False)
    assert drift.returncode == 2
    assert json.loads(drift.stdout) == [
        {"kind": "vm", "name": VMS[0], "host": "default", "field": "memory",
         "want": "160 MiB", "have": "150 MiB"}
    ]  # fmt: skip

    # prune: one replica fewer; deleted only with --prune, and never the VM of nobody's
    site_file(bed, path, replicas=1, memory="160M", nics=[{"network": NET}, {"network": NET}],
              tags=["role=frontend"])  # fmt: skip
    plain = plan_json(bed, path)
    assert plain["changes"] == [] and plain["pruned"] == 1
    pruning = plan_json(bed, path, "--prune")
    assert changes(pruning) == [("delete", "vm", VMS[1])]
    # a kernel boot without disks: only its console log goes
    assert pruning["changes"][0]["destroys"] == [str(bed.log_dir / f"{VMS[1]}-serial0.log")]
    refused = run(bed, "apply", "-f", str(path), "--prune", ok=False)  # no terminal, no --yes
    assert refused.returncode == 1 and "confirm with --yes" in refused.stderr
    assert vk.host.exists(VMS[1])
    run(bed, "apply", "-f", str(path), "--prune", "--yes")
    assert not vk.host.exists(VMS[1]) and vk.host.exists(VMS[0]) and vk.host.exists(vm_name)


def test_a_failed_apply_removes_what_it_made(bed: Bed, vk: Client, tmp_path: Path,
                                             cleanup: None) -> None:  # fmt: skip
    blocker = bed.daemon.shared / "sitefile-not-a-dir"
    blocker.write_text("a file where the third pool's directory should be\n")
    doc = {
        "site": SITE,
        "pools": [
            {"name": "vktest-sitep1", "path": str(bed.daemon.shared / "sitep1")},
            {"name": "vktest-sitep2", "path": str(bed.daemon.shared / "sitep2")},
            {"name": "vktest-sitep3", "path": str(blocker)},
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        done = run(bed, "apply", "-f", str(path), "--parallel", "1", ok=False)
        assert done.returncode == 1
        assert "+ pool vktest-sitep3 on default: FAILED: pool path" in done.stdout
        assert ("Rolled back: pool vktest-sitep2 on default; pool vktest-sitep1 on default"
                in done.stdout)  # fmt: skip
        names = vk.host.storage.pool_names()
        assert not {"vktest-sitep1", "vktest-sitep2", "vktest-sitep3"} & set(names)
        assert not (bed.daemon.shared / "sitep1").exists()
        assert not (bed.daemon.shared / "sitep2").exists()
    finally:
        blocker.unlink()
