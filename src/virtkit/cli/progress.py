"""A progress bar on stderr for long work (only on a terminal: pipes and logs stay clean)."""

from __future__ import annotations

import sys
import time

from virtkit.specs import format_size


class ProgressBar:
    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.started = time.monotonic()
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done != self.total):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-6)
        if self.total:
            share = min(1.0, done / self.total)
            bar = "#" * int(share * 30)
            text = f"{self.label} [{bar:<30}] {share:4.0%} {format_size(done)}"
        else:
            text = f"{self.label} {format_size(done)}"
        sys.stderr.write(f"\r{text} ({format_size(int(rate))}/s)   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class PhasedProgress:
    """One bar per phase (``progress(phase, done, total)``); the total may change as the work
    learns it (libvirt's job statistics)."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar: ProgressBar | None = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase or self.bar is None:
            self.close()
            self.phase = phase
            self.bar = ProgressBar(phase, total)
        self.bar.total = total
        self.bar(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` on the terminal (abort on no); without one, refuse unless ``yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        from virtkit.errors import InvalidInput

        raise InvalidInput("refusing without confirmation: add --yes", code="confirmation_required")
    import click

    click.confirm(question, abort=True, err=True)
