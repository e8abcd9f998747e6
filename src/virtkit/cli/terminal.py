"""Bridge the user's terminal and a console stream, with Ctrl+] to leave."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Protocol, Self

ESCAPE = b"\x1d"  # Ctrl+]


class Stream(Protocol):
    """What ``client.consoles.open`` returns (a ``ConsoleStream``), as far as the CLI uses it."""

    closed: bool

    def read(self, timeout: float = 0.0) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(stream: Stream) -> None:
    """Copy keys to the console and console output to the screen until Ctrl+] or the VM stops."""
    fd_in = sys.stdin.fileno()
    out = sys.stdout.buffer
    stdin_open = True
    with stream, _raw(fd_in):
        while not stream.closed:
            data = stream.read(timeout=0)
            if data:
                out.write(data)
                out.flush()
            wait = [fd_in] if stdin_open else []
            ready, _, _ = select.select(wait, [], [], 0.03)
            if not ready:
                if not wait:
                    select.select([], [], [], 0.03)
                continue
            keys = os.read(fd_in, 1024)
            if not keys:
                stdin_open = False  # input ended (a pipe): keep showing output until Ctrl+]/stop
                continue
            if ESCAPE in keys:
                before = keys.split(ESCAPE, 1)[0]
                if before:
                    stream.write(before)
                break
            stream.write(keys)
