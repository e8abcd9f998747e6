"""The KSM estimate on a process whose mergeable memory has a known content."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from virtkit.ksm.estimate import PAGE, estimate, mergeable_areas

CHILD = """
import mmap, os, sys, time
pages = 4096  # 16 MiB
m = mmap.mmap(-1, pages * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
same = b"S" * 4096
for i in range(pages):
    if i % 2 == 0:
        m[i * 4096:(i + 1) * 4096] = same              # 2048 identical pages
    elif i % 4 == 1:
        m[i * 4096:(i + 1) * 4096] = os.urandom(4096)  # 1024 unique pages
    elif i % 8 == 3:
        m[i * 4096:(i + 1) * 4096] = bytes(4096)       # 512 zero pages written
    else:
        _ = m[i * 4096]                                # 512 read only: the shared zero page
m.madvise(mmap.MADV_MERGEABLE)
big = mmap.mmap(-1, 1 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
big.madvise(mmap.MADV_MERGEABLE)                       # 1 GiB never touched: no pages at all
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc.pid
    assert proc.stdin is not None
    proc.stdin.close()  # it ends itself when its input closes
    proc.wait(10)


def test_counts_identical_unique_and_zero_pages(child: int) -> None:
    areas = mergeable_areas(child)
    assert sum(end - start for start, end in areas) == 4096 * PAGE + (1 << 30)
    result = estimate([child])
    # pages that are not there (never touched, or the shared zero page) do not count
    assert result.pages == 3584
    assert result.zero_pages == 512
    assert result.duplicate_pages == 2047  # 2048 copies of one page merge into one
    assert result.saved_pages == 2047 + 511
    assert result.merging_pages == 2048  # zero pages apart
    assert result.bytes_read == 3584 * PAGE


def test_two_processes_share_their_pages(child: int) -> None:
    both = estimate([child, child])  # the same content twice: every page has a twin
    assert both.pages == 7168 and both.zero_pages == 1024
    assert both.duplicate_pages == 3072 * 2 - 1 - 1024
    assert both.merging_pages == 7168 - 1024  # all but one "S", one per unique
