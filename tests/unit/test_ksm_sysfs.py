"""KSM settings against a fake sysfs root: checks, kernel refusals, the merge_across_nodes rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtkit import Client, Settings
from virtkit.errors import InvalidInput, Unsupported
from virtkit.ksm.service import KsmService
from virtkit.ksm.sysfs import KsmSysfs

FILES = {
    "run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "max_page_sharing": "256",
    "merge_across_nodes": "1", "use_zero_pages": "0", "advisor_mode": "[none] scan-time",
    "pages_shared": "5", "pages_sharing": "40", "general_profit": "150000", "full_scans": "3",
}  # fmt: skip


@pytest.fixture
def ksm(tmp_path: Path) -> KsmService:
    for name, value in FILES.items():
        (tmp_path / name).write_text(value + "\n")
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    client = Client(settings=Settings(uri=f"test://{node}", cache_dir=tmp_path / "c"))
    return KsmService(client.host, KsmSysfs(tmp_path))


def test_status_reads_the_counters(ksm: KsmService) -> None:
    report = ksm.status()
    assert report.run == "stopped" and report.saved == 150000 and report.pages_sharing == 40
    assert report.settings["advisor_mode"] == "none" and report.vms == []


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ({"pages_to_scan": "many"}, "whole number"),
        ({"pages_to_scan": "0"}, "between 1"),
        ({"max_page_sharing": "1"}, "between 2"),
        ({"merge_across_nodes": "2"}, "one of 0, 1"),
        ({"advisor_mode": "fast"}, "one of none, scan-time"),
        ({"bogus": "1"}, "unknown KSM setting"),
        ({}, "nothing to set"),
    ],
)
def test_values_are_checked_before_anything_is_written(
    ksm: KsmService, pair: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        ksm.set({"sleep_millisecs": "50", **pair} if pair else {})
    assert ksm.sysfs.read("sleep_millisecs") == "20"  # the good value was not written either


def test_set_and_merge_across_nodes_unmerges_first(ksm: KsmService) -> None:
    ksm.sysfs.root.joinpath("run").write_text("1")
    root = ksm.sysfs.root

    # the fake kernel: writing run=2 splits the pages at once
    original_write = ksm.sysfs.write

    def kernel_write(name: str, value: str) -> None:
        original_write(name, value)
        if name == "run" and value == "2":
            (root / "pages_shared").write_text("0")

    ksm.sysfs.write = kernel_write  # type: ignore[method-assign]
    lines = ksm.set({"pages_to_scan": "500", "merge_across_nodes": "0"})
    assert "pages_to_scan: 100 -> 500" in lines
    assert any("unmerged every page first" in line for line in lines)
    assert ksm.sysfs.read("merge_across_nodes") == "0" and ksm.sysfs.read("run") == "1"


def test_a_kernel_without_ksm(tmp_path: Path) -> None:
    sysfs = KsmSysfs(tmp_path / "missing")
    with pytest.raises(Unsupported, match="has no KSM"):
        sysfs.settings()
