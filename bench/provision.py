#!/usr/bin/env python3
"""Provisioning benchmark: command start to the tiny guest's boot marker on its serial console.

Three ways to get the same direct-kernel-boot guest running, interleaved round-robin:

* ``virtkit``      -- ``virtkit vm create NAME ... --start``
* ``virsh``        -- ``virsh define`` + ``virsh start`` of the XML virtkit defines
* ``virt-install`` -- ``virt-install --import`` of the same kernel, initrd and command line

Each run: start the clock, run the command(s), poll the serial log every 10 ms until the boot
marker appears, stop the clock; then destroy and undefine the domain. Needs root (the logs under
/var/log/libvirt/qemu are root-only). Usage: ``.venv/bin/python bench/provision.py --runs 5``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PREFIX = "vkbench-"
METHODS = ("virtkit", "virsh", "virt-install")
POLL_INTERVAL = 0.010
MARKER_TIMEOUT = 60.0
LOG_DIR = Path(os.environ.get("VIRTKIT_CONSOLE_LOG_DIR", "/var/log/libvirt/qemu"))
TARGET_VS_VIRSH = 1.10
TARGET_VS_VIRT_INSTALL = 1.00


@dataclass(frozen=True)
class Guest:
    kernel: str
    initrd: str
    cmdline: str
    marker: bytes


@dataclass(frozen=True)
class Run:
    boot: float  # command start -> boot marker seen
    command: float  # command start -> command(s) exited


def virtkit_bin() -> str:
    beside = Path(sys.executable).parent / "virtkit"
    found = str(beside) if beside.exists() else shutil.which("virtkit")
    if not found:
        sys.exit("virtkit not found: run with the venv's python (.venv/bin/python)")
    return found


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def serial_log(name: str) -> Path:
    return LOG_DIR / f"{name}-serial0.log"


class Bench:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.virtkit = virtkit_bin()
        info = json.loads(run(self.virtkit, "dev", "tiny-guest"))
        self.guest = Guest(
            info["kernel"], info["initrd"], info["cmdline"], info["boot_marker"].encode()
        )
        self.template = self._template_xml()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=PREFIX))

    def virsh(self, *args: str) -> str:
        return run("virsh", "-q", "-c", self.uri, *args)

    def virtkit_create_args(self, name: str) -> list[str]:
        g = self.guest
        argv = [self.virtkit, "-c", self.uri, "vm", "create", name, "--memory", "128M"]
        return [*argv, "--kernel", g.kernel, "--initrd", g.initrd, "--cmdline", g.cmdline]

    def _template_xml(self) -> str:
        """The XML of a domain virtkit created (``--print-xml`` leaves out the console log)."""
        name = f"{PREFIX}template"
        self.cleanup(name)
        try:
            run(*self.virtkit_create_args(name))
            return self.virsh("dumpxml", "--inactive", name)
        finally:
            self.cleanup(name)

    def cleanup(self, name: str) -> None:
        """Destroy and undefine ``name`` if it exists; remove its logs."""
        for action in ("destroy", "undefine"):
            subprocess.run(
                ["virsh", "-q", "-c", self.uri, action, name], capture_output=True, check=False
            )
        for path in (serial_log(name), LOG_DIR / f"{name}.log"):
            path.unlink(missing_ok=True)

    def domain_xml(self, name: str) -> str:
        """The template renamed to ``name``, without a UUID, logging to a per-run file."""
        for _event, (prefix, uri) in ET.iterparse(io.StringIO(self.template), ["start-ns"]):
            ET.register_namespace(prefix, uri)
        root = ET.fromstring(self.template)
        name_el = root.find("name")
        assert name_el is not None
        name_el.text = name
        uuid_el = root.find("uuid")
        if uuid_el is not None:
            root.remove(uuid_el)
        logs = root.findall("devices/serial/log") + root.findall("devices/console/log")
        if not logs:
            raise RuntimeError("virtkit's domain has no serial console log")
        for log_el in logs:
            log_el.set("file", str(serial_log(name)))
        return ET.tostring(root, encoding="unicode")

    def commands(self, method: str, name: str) -> list[list[str]]:
        g = self.guest
        if method == "virtkit":
            return [[*self.virtkit_create_args(name), "--start"]]
        if method == "virsh":
            xml_file = self.tmpdir / f"{name}.xml"
            xml_file.write_text(self.domain_xml(name))
            return [
                ["virsh", "-q", "-c", self.uri, "define", str(xml_file)],
                ["virsh", "-q", "-c", self.uri, "start", name],
            ]
        argv = ["virt-install", "--connect", self.uri, "--name", name, "--virt-type", "qemu"]
        argv += ["--memory", "128", "--vcpus", "1", "--import", "--disk", "none"]
        argv += ["--boot", f"kernel={g.kernel},initrd={g.initrd},kernel_args={g.cmdline}"]
        argv += ["--network", "none", "--graphics", "none", "--noautoconsole"]
        argv += ["--serial", f"pty,log.file={serial_log(name)}"]
        return [[*argv, "--osinfo", "detect=off,name=linux2022"]]

    def wait_marker(self, path: Path) -> None:
        deadline = time.monotonic() + MARKER_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.guest.marker in path.read_bytes():
                    return
            except FileNotFoundError:
                pass
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"no boot marker in {path} after {MARKER_TIMEOUT:.0f} s")

    def measure(self, method: str, name: str) -> Run:
        self.cleanup(name)  # a clean start, and no stale marker in the log
        commands = self.commands(method, name)  # XML prepared outside the clock
        try:
            start = time.perf_counter()
            for argv in commands:
                run(*argv)
            done = time.perf_counter()
            self.wait_marker(serial_log(name))
            return Run(time.perf_counter() - start, done - start)
        finally:
            self.cleanup(name)
            (self.tmpdir / f"{name}.xml").unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def summarize(results: dict[str, list[Run]]) -> dict[str, Any]:
    stats: dict[str, dict[str, float]] = {}
    for method, runs in results.items():
        boots = [r.boot for r in runs]
        stats[method] = {
            "median": statistics.median(boots),
            "min": min(boots),
            "max": max(boots),
            "command_median": statistics.median(r.command for r in runs),
        }
    vk = stats["virtkit"]["median"]
    vs_virsh = vk / stats["virsh"]["median"]
    vs_vi = vk / stats["virt-install"]["median"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "runs": {
            m: [{"boot": r.boot, "command": r.command} for r in rs] for m, rs in results.items()
        },
        "stats": stats,
        "ratio_virtkit_virsh": vs_virsh,
        "ratio_virtkit_virt_install": vs_vi,
        "target_virsh_met": vs_virsh <= TARGET_VS_VIRSH,
        "target_virt_install_met": vs_vi < TARGET_VS_VIRT_INSTALL,
    }


def print_table(summary: dict[str, Any], runs: int) -> None:
    print(f"\nseconds from command start to boot marker, {runs} runs each")
    print(f"{'method':<14}{'median':>8}{'min':>8}{'max':>8}{'cmd med':>9}")
    for method, s in summary["stats"].items():
        cells = (s["median"], s["min"], s["max"])
        print(f"{method:<14}" + "".join(f"{c:8.3f}" for c in cells) + f"{s['command_median']:9.3f}")
    print()
    verdict = {True: "met", False: "MISSED"}
    for label, key, target in (
        ("virtkit / virsh       ", "virsh", f"<= {TARGET_VS_VIRSH:.2f}"),
        ("virtkit / virt-install", "virt_install", f"<  {TARGET_VS_VIRT_INSTALL:.2f}"),
    ):
        ratio, met = summary[f"ratio_virtkit_{key}"], summary[f"target_{key}_met"]
        print(f"{label} {ratio:.3f}  (target {target}: {verdict[met]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per method (5)")
    parser.add_argument("--uri", default="qemu:///system", help="libvirt URI")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results: dict[str, list[Run]] = {m: [] for m in METHODS}
    bench: Bench | None = None
    try:
        bench = Bench(args.uri)
        for rnd in range(args.runs + 1):  # round 0 is the warm-up, not counted
            for method in METHODS:
                result = bench.measure(method, f"{PREFIX}{method.replace('-', '')}-{rnd}")
                label = f"round {rnd}" if rnd else "warm-up"
                line = (
                    f"{label:>8} {method:<13}{result.boot:7.3f} s (command {result.command:.3f} s)"
                )
                print(line, file=sys.stderr, flush=True)
                if rnd:
                    results[method].append(result)
    except KeyboardInterrupt:
        print("interrupted (domains cleaned up)", file=sys.stderr)
        sys.exit(130)
    finally:
        if bench is not None:
            bench.close()
    summary = summarize(results)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary, args.runs)


if __name__ == "__main__":
    main()
