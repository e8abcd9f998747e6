"""KSM for real: tiny guests with identical memory merge; an opted-out guest does not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text
from virtkit import Client
from virtkit.ksm.sysfs import KNOBS, KsmSysfs
from virtkit.services.tinyguest import FILL_MARKER
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
    # the pages the guest has touched (its kernel, initramfs...), never more than its 128 MiB
    assert 16 * 2**20 <= estimate["pages"] * 4096 <= 128 * 2**20
    assert 0 < estimate["saved"] <= estimate["pages"] * 4096
    missing = run_cli(bed, "ksm", "estimate", "vktest-nope")
    assert missing.returncode == 1 and "no VM named" in missing.stderr


def test_adaptive_daemon_merges_what_the_estimate_predicted(
    bed: Bed, vk: Client, ksm_restored: None, tmp_path: Path
) -> None:
    """Three guests hold the same 48 MiB: the estimate taken before KSM runs predicts the pages
    that merge within 10%, and the adaptive daemon engages on it, merges at full speed, then
    drops to its slowest scan once two full scans find nothing more."""
    names = [f"vktest-ksmest{i}" for i in range(3)]
    fill = 48
    try:
        for name in names:
            cmdline = f"{bed.guest.cmdline} virtkit.fill={fill}"
            spec = tiny_spec(bed, name, memory="192M", cmdline=cmdline)
            vk.vms.create(parse_vm_spec(spec))
            vk.vms.start(name)
        for name in names:
            wait_for_text(bed, name, FILL_MARKER, timeout=120)
        vk.ksm.unmerge()  # from cold: nothing merged, KSM stopped
        SYSFS.write("pages_to_scan", "100")
        SYSFS.write("sleep_millisecs", "20")
        estimate = vk.ksm.estimate(names)
        assert estimate.merging_pages >= len(names) * fill * 256  # the filled pages at least
        tuner = vk.ksm.tuner("adaptive", interval=1.0, lock_dir=tmp_path / "locks")
        stop = threading.Event()
        closing: list[str] = []
        thread = threading.Thread(target=lambda: closing.append(tuner.run(stop)))
        thread.start()
        try:
            deadline = time.monotonic() + 120
            while (SYSFS.read("pages_to_scan"), SYSFS.read("sleep_millisecs")) != ("100", "200"):
                assert thread.is_alive() and time.monotonic() < deadline
                time.sleep(0.5)
        finally:
            stop.set()
            thread.join(30)
        assert tuner.steps >= 3 and closing and "stays as the policy last set it" in closing[0]
        assert SYSFS.read("run") == "1"  # left as the policy set it
        vms = {v.name: v for v in vk.ksm.status().vms}
        merged = sum(vms[n].merging_pages or 0 for n in names)
        assert abs(merged - estimate.merging_pages) <= 0.1 * estimate.merging_pages, (
            merged, estimate,
        )  # fmt: skip
        assert all((vms[n].profit or 0) > 0 for n in names)
    finally:
        for name in names:
            if vk.host.exists(name):
                vk.vms.delete(name, force=True, remove_storage=True)
