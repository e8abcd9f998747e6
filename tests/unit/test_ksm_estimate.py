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
    # the rest (1024 pages) stay zero
m.madvise(mmap.MADV_MERGEABLE)
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
    assert [end - start for start, end in areas] == [4096 * PAGE]
    result = estimate([child])
    assert result.pages == 4096
    assert result.zero_pages == 1024
    assert result.duplicate_pages == 2047  # 2048 copies of one page merge into one
    assert result.saved_pages == 2047 + 1023
    assert result.bytes_read == 4096 * PAGE


def test_two_processes_share_their_pages(child: int) -> None:
    both = estimate([child, child])  # the same content twice: every page has a twin
    assert both.pages == 8192 and both.zero_pages == 2048
    assert both.duplicate_pages == 4096 * 2 - 2048 - 1 - 1024  # all but one "S", one per unique
