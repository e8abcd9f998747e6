"""Predict what KSM would merge, before it runs: hash the mergeable memory page by page.

The areas KSM scans are the ones a process marked mergeable (``mg`` in /proc/PID/smaps VmFlags;
QEMU marks guest RAM so). They are read through /proc/PID/mem (root only) in large chunks, and
each 4 KiB page is hashed with a vectorised 64-bit polynomial hash (numpy), so the estimate runs
at memory speed rather than Python-loop speed. Identical pages, within and across processes,
would be merged into one: a group of k saves k - 1 pages. All-zero pages are counted apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from virtkit.errors import PermissionDenied

PAGE = 4096
CHUNK = 4 * 1024 * 1024  # one reused buffer of this size: cache-friendly, no allocations
_WORDS = PAGE // 8
# fixed odd multipliers: the hash of a page is sum(word_i * K_i) mod 2^64
_K = np.random.default_rng(0x5EED).integers(1, 2**63, size=_WORDS, dtype=np.uint64) | np.uint64(1)
_AREA = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


@dataclass(frozen=True)
class Estimate:
    pages: int  # mergeable pages read
    zero_pages: int
    duplicate_pages: int  # non-zero pages that would merge into another copy
    bytes_read: int
    seconds: float

    @property
    def saved_pages(self) -> int:
        """Pages freed if every duplicate merged (zero pages merge into one as well)."""
        return self.duplicate_pages + max(self.zero_pages - 1, 0)


def mergeable_areas(pid: int) -> list[tuple[int, int]]:
    """(start, end) of the areas KSM may scan in a process."""
    areas: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            match = _AREA.match(line)
            if match:
                current = (int(match.group(1), 16), int(match.group(2), 16))
            elif line.startswith("VmFlags:") and current and " mg" in line:
                areas.append(current)
    return areas


def _page_hashes(pid: int) -> Iterator[np.ndarray]:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for start, end in mergeable_areas(pid):
            offset = start
            while offset < end:
                size = min(CHUNK, end - offset)
                try:
                    got = os.preadv(fd, [view[:size]], offset)
                except OSError:
                    got = 0  # an unreadable hole (guard page, device memory)
                offset += size
                usable = got - got % PAGE
                if not usable:
                    continue
                words = np.frombuffer(buffer, dtype=np.uint64, count=usable // 8)
                # integer matrix-vector product: sum(word_i * K_i) mod 2^64 for every page
                yield words.reshape(-1, _WORDS) @ _K
    finally:
        os.close(fd)


def estimate(pids: list[int]) -> Estimate:
    """What KSM would save across ``pids`` (root: reads their memory)."""
    import time

    started = time.monotonic()
    hashes: list[np.ndarray] = []
    read = 0
    try:
        for pid in pids:
            for block in _page_hashes(pid):
                hashes.append(block)
                read += block.size * PAGE
    except PermissionError:
        raise PermissionDenied(
            "reading guest memory for the estimate needs root", code="ksm_permission"
        ) from None
    if not hashes:
        return Estimate(0, 0, 0, 0, time.monotonic() - started)
    every = np.concatenate(hashes)
    zero = int(np.count_nonzero(every == 0))  # an all-zero page hashes to 0
    nonzero = every[every != 0]
    distinct = int(np.unique(nonzero).size)
    return Estimate(
        pages=int(every.size), zero_pages=zero, duplicate_pages=int(nonzero.size) - distinct,
        bytes_read=read, seconds=time.monotonic() - started,
    )  # fmt: skip
