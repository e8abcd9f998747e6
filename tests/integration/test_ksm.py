"""KSM for real: tiny guests with identical memory merge; an opted-out guest does not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text
from virtkit import Client
from virtkit.ksm.sysfs import KNOBS, KsmSysfs
from virtkit.specs import parse_vm_spec

pytestmark = pytest.mark.integration
SYSFS = KsmSysfs()


@pytest.fixture
def ksm_restored() -> Iterator[None]:
    """Every KSM value as it was before the test, merged pages split back when it found none."""
    if not (SYSFS.root / "run").exists():
        pytest.skip("this kernel has no KSM")
    before = SYSFS.settings()
    shared_before = SYSFS.read_int("pages_shared") or 0
    yield
    if shared_before == 0:
        Path(SYSFS.root / "run").write_text("2")
        deadline = time.monotonic() + 60
        while (SYSFS.read_int("pages_shared") or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
    for name, value in before.items():
        if name != "run" and KNOBS.get(name) and SYSFS.read(name) != value:
            (SYSFS.root / name).write_text(value)
    (SYSFS.root / "run").write_text(before["run"])


def test_identical_guests_merge_and_an_opted_out_one_does_not(
    bed: Bed, vk: Client, ksm_restored: None
) -> None:
    names = [f"vktest-ksm{i}" for i in range(3)]
    try:
        for name in names:
            vk.vms.create(parse_vm_spec(tiny_spec(bed, name)))
        opted = run_cli(bed, "vm", "set", names[2], "--ksm", "off")
        assert opted.returncode == 0 and "KSM off" in opted.stdout, opted.stderr
        assert not vk.vms.get(names[2]).ksm
        for name in names:
            vk.vms.start(name)
            wait_for_text(bed, name)
        tuned = run_cli(bed, "ksm", "set", "pages_to_scan=2000", "sleep_millisecs=10")
        assert tuned.returncode == 0, tuned.stderr
        assert SYSFS.read("pages_to_scan") == "2000"
        assert run_cli(bed, "ksm", "enable").returncode == 0
        deadline = time.monotonic() + 90
        while True:
            report = json.loads(run_cli(bed, "ksm", "status", "--json").stdout)
            vms = {v["name"]: v for v in report["vms"]}
            merged = [vms[n]["merging_pages"] or 0 for n in names[:2]]
            if report["saved"] and all(m > 0 for m in merged):
                break
            assert time.monotonic() < deadline, report
            time.sleep(1)
        assert report["run"] == "running" and report["saved_share"] > 0
        assert vms[names[0]]["profit"] > 0 and not vms[names[0]]["opted_out"]
        assert vms[names[2]]["opted_out"] and not vms[names[2]]["mergeable"]
        assert vms[names[2]]["merging_pages"] == 0
        assert run_cli(bed, "ksm", "unmerge").returncode == 0
        assert SYSFS.read_int("pages_shared") == 0 and SYSFS.read("run") == "0"
    finally:
        for name in names:
            if vk.host.exists(name):
                vk.vms.delete(name, force=True, remove_storage=True)


def test_estimate_reads_a_running_guest(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))
    stopped = run_cli(bed, "ksm", "estimate", vm_name)
    assert stopped.returncode == 1 and "not running" in stopped.stderr
    vk.vms.start(vm_name)
    wait_for_text(bed, vm_name)
    result = run_cli(bed, "ksm", "estimate", vm_name, "--json")
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout)
    assert estimate["vms"] == [vm_name]
    assert estimate["pages"] * 4096 >= 128 * 1024 * 1024  # its 128 MiB of RAM at least
    assert 0 < estimate["saved"] <= estimate["pages"] * 4096
    missing = run_cli(bed, "ksm", "estimate", "vktest-nope")
    assert missing.returncode == 1 and "no VM named" in missing.stderr
