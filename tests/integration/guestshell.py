"""The tiny guest's shell on its serial console, driven by tests: write and read known data on
its first disk (/dev/vda)."""

from __future__ import annotations

import re
import secrets
import time

from virtkit import Client
from virtkit.backend.console import ConsoleStream

BLOCK = 4096


class GuestShell:
    """Run shell commands in a running tiny guest and read what they print."""

    def __init__(self, client: Client, vm: str) -> None:
        self.client = client
        self.vm = vm
        self._console: ConsoleStream | None = None

    def _open(self) -> ConsoleStream:
        if self._console is None or self._console.closed:
            self._console = self.client.consoles.open(self.vm, force=True)
        return self._console

    def run(self, command: str, timeout: float = 60.0) -> str:
        """Run ``command``; returns what it printed (stdout and stderr)."""
        tag = secrets.token_hex(4)
        # the marker is split in the command line, so the echoed command never matches it
        line = f'{command}; echo "VK{tag}""END:$?"\n'
        deadline = time.monotonic() + timeout
        output = ""
        while time.monotonic() < deadline:
            console = self._open()
            console.write(line.encode())
            sent = time.monotonic()
            output = ""
            while time.monotonic() < deadline:
                output += console.read(timeout=0.5).decode(errors="replace")
                found = re.search(rf"VK{tag}END:(\d+)", output)
                if found:
                    body = output[: found.start()]
                    # drop the echoed command line
                    return body.split(command, 1)[-1].strip("\r\n ")
                if console.closed:
                    break
                if time.monotonic() - sent > 10 and not output:
                    break  # the shell did not see it (still booting): send again
        raise AssertionError(f"{command!r} gave no answer in {timeout:g} s; got:\n{output[-2000:]}")

    def write(self, block: int, text: str) -> None:
        """Write ``text`` at 4 KiB block ``block`` of /dev/vda, and sync it to the disk."""
        self.run(
            f"dd if=/dev/zero of=/dev/vda bs={BLOCK} seek={block} count=1 conv=notrunc "
            f"2>/dev/null; echo {text} | dd of=/dev/vda bs={BLOCK} seek={block} "
            "conv=notrunc,fsync 2>/dev/null; sync"
        )

    def read(self, block: int) -> str:
        """The text at 4 KiB block ``block`` of /dev/vda, as the disk holds it (caches dropped)."""
        out = self.run(
            "echo 3 > /proc/sys/vm/drop_caches; "
            f'echo "DA""TA=$(dd if=/dev/vda bs={BLOCK} skip={block} count=1 2>/dev/null '
            "| head -c 64 | tr -cd '[:alnum:]-_.')\""
        )
        found = re.search(r"DATA=(\S*)", out)
        assert found is not None, out
        return found.group(1)

    def close(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None
