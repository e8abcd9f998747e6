#!/usr/bin/env python3
"""Serial console keystroke latency through the API's websocket against ``virsh console``
(issue 13): the time from writing one key to seeing the guest's shell echo it.

A private libvirtd boots the tiny guest (its busybox shell echoes what is typed on ttyS0).
``virsh console`` runs under a pseudo-terminal; then a ``virtkit serve`` on the same daemon
gives a console ticket and the websocket is opened with it. Each side types ``--keys``
characters, one at a time, waiting for each echo. Goal: the websocket's median within 2x of
virsh's.

Needs root. ``.venv/bin/python bench/console.py [--keys 200] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testbed.libvirtd import PrivateLibvirtd  # noqa: E402

import virtkit  # noqa: E402
from virtkit.services.tinyguest import BOOT_MARKER  # noqa: E402
from virtkit.specs.vm import VMSpec  # noqa: E402

_spec = importlib.util.spec_from_file_location("vkbench_api", ROOT / "bench" / "api.py")
assert _spec is not None and _spec.loader is not None
bench_api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_api)

NAME = "vkbench-con-1"
GOAL_RATIO = 2.0
KEY = b"x"
KILL_LINE = b"\x15"  # Ctrl-U: the shell forgets the typed line
PER_LINE = 20


class Pty:
    """``virsh console`` on a pseudo-terminal."""

    def __init__(self, uri: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            ["virsh", "-c", uri, "console", NAME, "--force"],
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
        )  # fmt: skip
        os.close(slave)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def until(self, want: bytes, timeout: float = 10.0) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while want not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {want!r} from virsh console: {seen[-200:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                seen += os.read(self.master, 4096)
        return seen

    def close(self) -> None:
        self.send(b"\x1d")  # Ctrl-]: virsh leaves the console
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the virsh this bench started
            self.proc.wait()
        os.close(self.master)


class Socket:
    """The API's serial websocket."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def until(self, want: bytes, timeout: float = 10.0) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while want not in seen:
            message = self.conn.recv(timeout=max(0.01, deadline - time.monotonic()))
            seen += message if isinstance(message, bytes) else message.encode()
        return seen

    def close(self) -> None:
        self.conn.close()


def keystrokes(side: Pty | Socket, keys: int) -> list[float]:
    """Milliseconds from each key to its echo."""
    side.send(b"\n")
    side.until(b"# ")  # a prompt: the shell reads the line
    times = []
    for i in range(keys):
        start = time.perf_counter()
        side.send(KEY)
        side.until(KEY)
        times.append((time.perf_counter() - start) * 1000)
        if i % PER_LINE == PER_LINE - 1:
            side.send(KILL_LINE + b"\n")
            side.until(b"# ")
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[int(len(ordered) * 0.9)],
        "max_ms": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with PrivateLibvirtd(name="vkbench-con") as daemon:
        state = Path(tempfile.mkdtemp(prefix="vkbench-con-"))
        (state / "logs").mkdir()
        settings = virtkit.Settings(
            uri=daemon.uri,
            cache_dir=state / "cache",
            state_dir=state,
            console_log_dir=state / "logs",
        )
        with virtkit.Client(settings=settings) as vk:
            guest = vk.tiny_guest()
            spec = VMSpec(name=NAME, memory="128M", kernel=guest.kernel, initrd=guest.initrd,
                          cmdline=guest.cmdline)  # fmt: skip
            vk.vms.create(spec, start=True)
            try:
                deadline = time.monotonic() + 60
                while BOOT_MARKER not in vk.consoles.read_log(NAME, tail_bytes=65536):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the tiny guest did not boot within 60 s")
                    time.sleep(0.1)
                virsh = Pty(daemon.uri)
                try:
                    virsh.until(b"Escape character")
                    virsh_times = keystrokes(virsh, args.keys)
                finally:
                    virsh.close()
                service = bench_api.Service(daemon.uri, state)
                try:
                    r = httpx.post(f"{service.url}/api/v1/vms/{NAME}/console/ticket",
                                   json={"kind": "serial"}, headers=service.headers)  # fmt: skip
                    r.raise_for_status()
                    url = f"ws://127.0.0.1:{service.port}/api/v1/{r.json()['path']}"
                    with connect(url, subprotocols=["binary"], proxy=None) as conn:
                        ws_times = keystrokes(Socket(conn), args.keys)
                finally:
                    service.stop()
            finally:
                vk.vms.delete(NAME, force=True, remove_storage=True)
    result: dict[str, Any] = {
        "keys": args.keys,
        "virsh": summary(virsh_times),
        "websocket": summary(ws_times),
    }
    ratio = result["websocket"]["median_ms"] / result["virsh"]["median_ms"]
    result["ratio"] = ratio
    result["goal_met"] = ratio <= GOAL_RATIO
    for side in ("virsh", "websocket"):
        s = result[side]
        print(f"{side:>9}: median {s['median_ms']:.1f} ms, p90 {s['p90_ms']:.1f} ms, "
              f"max {s['max_ms']:.1f} ms over {args.keys} keys")  # fmt: skip
    verdict = "met" if result["goal_met"] else "MISSED"
    print(f"websocket / virsh: {ratio:.2f}x (goal <= {GOAL_RATIO:g}x: {verdict})")
    if args.json:
        summary_doc = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "result": result,
        }
        args.json.write_text(json.dumps(summary_doc, indent=2))


if __name__ == "__main__":
    main()
