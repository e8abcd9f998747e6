#!/usr/bin/env python3
"""Speed of `virtkit ksm estimate`: GiB of mergeable memory hashed per second, on one core.

A child process fills SIZE of private anonymous memory (half identical pages, a quarter
random, a quarter zero), marks it mergeable, and the estimate reads and hashes it through
/proc/PID/mem. Goal: at least 1 GiB/s. Run as root: `.venv/bin/python bench/ksm_estimate.py`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from virtkit.ksm.estimate import estimate

CHILD = """
import mmap, os, sys
pages = int(sys.argv[1]) // 4096
m = mmap.mmap(-1, pages * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
same, noise = b"S" * 4096, os.urandom(4096 * 256)
for i in range(pages):
    if i % 2 == 0:
        m[i * 4096:(i + 1) * 4096] = same
    elif i % 4 == 1:
        j = (i * 4096) % len(noise)
        m[i * 4096:(i + 1) * 4096] = (noise[j:] + noise[:j])[:4096] + b""
m.madvise(mmap.MADV_MERGEABLE)
print("ready", flush=True)
sys.stdin.read()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    size = int(args.size_gib * 2**30)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        speeds = []
        for run in range(args.runs):
            result = estimate([proc.pid])
            speed = result.bytes_read / result.seconds / 2**30
            speeds.append(speed)
            print(
                f"run {run + 1}: {result.bytes_read / 2**30:.2f} GiB in {result.seconds:.3f} s "
                f"= {speed:.2f} GiB/s; saved {result.saved_pages} pages"
            )
        median = statistics.median(speeds)
        print(f"median {median:.2f} GiB/s (goal >= 1 GiB/s: {'met' if median >= 1 else 'missed'})")
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(30)


if __name__ == "__main__":
    main()
