"""Predict what KSM would merge, before it runs: hash the mergeable memory page by page.

The areas KSM scans are the ones a process marked mergeable (``mg`` in /proc/PID/smaps VmFlags;
QEMU marks guest RAM so). They are read through /proc/PID/mem (root only) in large chunks, and
each 4 KiB page is hashed with a vectorised 64-bit polynomial hash (numpy), so the estimate runs
at memory speed rather than Python-loop speed. Identical pages, within and across processes,
would be merged into one: a group of k saves k - 1 pages. All-zero pages are counted apart:
what KSM does with them depends on ``use_zero_pages`` and on the kernel (measured on 6.18: the
non-zero duplicates matched ``pages_sharing`` within 0.1%, the zero pages did not merge, and
transparent huge pages' zero tails were freed by the kernel on its own).

Only pages the process really has are counted: /proc/PID/pagemap says which pages are present
(or swapped), and untouched memory -- which reads as zeros but is no page at all, or the
kernel's shared zero page, which KSM never scans -- is skipped. Without that, a guest's unused
RAM would count as hundreds of MB of mergeable zero pages.
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


_PRESENT = np.uint64(1 << 63)
_SWAPPED = np.uint64(1 << 62)
_PFN = np.uint64((1 << 55) - 1)


@dataclass(frozen=True)
class Estimate:
    pages: int  # mergeable pages present in memory
    zero_pages: int
    duplicate_pages: int  # non-zero pages that would merge into another copy
    bytes_read: int
    seconds: float
    merging_pages: int = 0  # non-zero pages with a twin: what ksm_merging_pages would count

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


def zero_page_pfn() -> int | None:
    """The page frame of the kernel's shared zero page (what untouched memory maps on a read),
    from a page of our own that we only read; None without root (PFNs read as 0)."""
    import mmap

    probe = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        _ = probe[0]
        view = np.frombuffer(probe, dtype=np.uint8)
        address = view.ctypes.data
        del view
        with open("/proc/self/pagemap", "rb") as pagemap:
            pagemap.seek(address // PAGE * 8)
            entry = int.from_bytes(pagemap.read(8), "little")
    finally:
        probe.close()
    pfn = entry & ((1 << 55) - 1)
    return pfn if entry >> 63 and pfn else None


def _present(pagemap: int, offset: int, count: int, zero_pfn: int | None) -> np.ndarray:
    """Which of ``count`` pages from ``offset`` the process has (present or swapped), not
    counting the shared zero page."""
    raw = os.pread(pagemap, count * 8, offset // PAGE * 8)
    entries = np.frombuffer(raw, dtype=np.uint64)
    mask = (entries & (_PRESENT | _SWAPPED)) != 0
    if zero_pfn is not None:
        mask &= ((entries & _PFN) != np.uint64(zero_pfn)) | ((entries & _PRESENT) == 0)
    out = np.zeros(count, dtype=bool)
    out[: mask.size] = mask
    return out


def _page_hashes(pid: int, zero_pfn: int | None) -> Iterator[np.ndarray]:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for start, end in mergeable_areas(pid):
            offset = start
            while offset < end:
                size = min(CHUNK, end - offset)
                present = _present(pagemap, offset, size // PAGE, zero_pfn)
                if not present.any():
                    offset += size
                    continue
                try:
                    got = os.preadv(fd, [view[:size]], offset)
                except OSError:
                    got = 0  # an unreadable hole (guard page, device memory)
                offset += size
                usable = got - got % PAGE
                if not usable:
                    continue
                pages = np.frombuffer(buffer, dtype=np.uint64, count=usable // 8)
                pages = pages.reshape(-1, _WORDS)
                keep = present[: pages.shape[0]]
                if not keep.all():
                    pages = pages[keep]
                # integer matrix-vector product: sum(word_i * K_i) mod 2^64 for every page
                yield pages @ _K
    finally:
        os.close(pagemap)
        os.close(fd)


def estimate(pids: list[int]) -> Estimate:
    """What KSM would save across ``pids`` (root: reads their memory)."""
    import time

    started = time.monotonic()
    hashes: list[np.ndarray] = []
    read = 0
    zero_pfn = zero_page_pfn()
    try:
        for pid in pids:
            try:
                for block in _page_hashes(pid, zero_pfn):
                    hashes.append(block)
                    read += block.size * PAGE
            except (FileNotFoundError, ProcessLookupError):
                continue  # the VM stopped while it was read: it has nothing to merge now
    except PermissionError:
        raise PermissionDenied(
            "reading guest memory for the estimate needs root", code="ksm_permission"
        ) from None
    if not hashes:
        return Estimate(0, 0, 0, 0, time.monotonic() - started)
    every = np.concatenate(hashes)
    zero = int(np.count_nonzero(every == 0))  # an all-zero page hashes to 0
    nonzero = every[every != 0]
    _values, counts = np.unique(nonzero, return_counts=True)
    merging = int(counts[counts > 1].sum())
    return Estimate(
        pages=int(every.size), zero_pages=zero, duplicate_pages=int(nonzero.size) - counts.size,
        bytes_read=read, seconds=time.monotonic() - started, merging_pages=merging,
    )  # fmt: skip
