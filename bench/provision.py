#!/usr/bin/env python3
"""Provisioning benchmark: command start to the tiny guest's first output on its serial console.

Five ways to get the same direct-kernel-boot guest running, interleaved round-robin:

* ``virtkit``      -- ``virtkit vm create NAME ... --start``
* ``virsh``        -- ``virsh define`` + ``virsh start`` of the XML virtkit defines
* ``minimal``      -- ``virsh define`` + ``virsh start`` of a minimal domain (name, memory, vcpu,
                      kernel/initrd/cmdline, a serial console logged to a file; nothing else):
                      the baseline of issue 12
* ``minimal+acpi`` -- the same with ``<features><acpi/>``: the floor for a guest that a graceful
                      shutdown can stop (ACPI alone is most of the boot difference under TCG)
* ``virt-install`` -- ``virt-install --import`` of the same kernel, initrd and command line

Each run: start the clock, run the command(s), poll the serial log every 10 ms until the guest's
first output and then its boot marker appear; then destroy and undefine the domain. Needs root
(the logs under /var/log/libvirt/qemu are root-only). ``--private`` runs everything against a
private libvirtd (tests/testbed/libvirtd.py: QEMU as root, no virtlogd), for hosts where the
system daemon re-probes QEMU on every call (its QEMU user denied /dev/kvm).
Usage: ``.venv/bin/python bench/provision.py --runs 7``.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PREFIX = "vkbench-"
METHODS = ("virtkit", "virsh", "minimal", "minimal+acpi", "virt-install")
BASELINE = "minimal"
POLL_INTERVAL = 0.010
MARKER_TIMEOUT = 60.0
LOG_DIR = Path(os.environ.get("VIRTKIT_CONSOLE_LOG_DIR", "/var/log/libvirt/qemu"))
TARGET_VS_BASELINE = 1.10  # first guest output, virtkit / minimal
TARGET_VS_VIRT_INSTALL = 1.00  # first guest output, virtkit / virt-install
PRIVATE_HOST_UUID = "6b1f0c2e-7d43-4a8e-9c35-0f2b8d6a1e57"  # --private's daemon
TARGET_OWN_TIME = 0.10  # seconds: virtkit's command minus minimal's (define + start)


@dataclass(frozen=True)
class Guest:
    kernel: str
    initrd: str
    cmdline: str
    marker: bytes


@dataclass(frozen=True)
class Run:
    first: float  # command start -> the guest's first byte on its serial console
    boot: float  # command start -> boot marker seen (the guest's first output of its own)
    command: float  # command start -> command(s) exited (after ``start`` returned)


def virtkit_bin() -> str:
    beside = Path(sys.executable).parent / "virtkit"
    found = str(beside) if beside.exists() else shutil.which("virtkit")
    if not found:
        sys.exit("virtkit not found: run with the venv's python (.venv/bin/python)")
    return found


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def serial_log(name: str) -> Path:
    return LOG_DIR / f"{name}-serial0.log"


class Bench:
    def __init__(self, uri: str, env: dict[str, str] | None = None) -> None:
        self.uri = uri
        self.env = env
        self.virtkit = virtkit_bin()
        info = json.loads(run(self.virtkit, "dev", "tiny-guest", env=env))
        self.guest = Guest(
            info["kernel"], info["initrd"], info["cmdline"], info["boot_marker"].encode()
        )
        self.template = self._template_xml()
        root = ET.fromstring(self.template)
        self.domain_type = root.get("type", "qemu")
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
            run(*self.virtkit_create_args(name), env=self.env)
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

    def minimal_xml(self, name: str, *, acpi: bool = False) -> str:
        """Name, memory, vCPU, kernel/initrd/cmdline and a logged serial console; with ``acpi``
        also ``<features><acpi/>`` (what a graceful shutdown needs, and what virtkit keeps)."""
        g = self.guest
        root = ET.Element("domain", type=self.domain_type)
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "memory", unit="MiB").text = "128"
        ET.SubElement(root, "vcpu").text = "1"
        os_el = ET.SubElement(root, "os")
        ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
        ET.SubElement(os_el, "kernel").text = g.kernel
        ET.SubElement(os_el, "initrd").text = g.initrd
        ET.SubElement(os_el, "cmdline").text = g.cmdline
        if acpi:
            ET.SubElement(ET.SubElement(root, "features"), "acpi")
        devices = ET.SubElement(root, "devices")
        serial = ET.SubElement(devices, "serial", type="pty")
        ET.SubElement(serial, "log", file=str(serial_log(name)), append="off")
        ET.SubElement(serial, "target", port="0")
        console = ET.SubElement(devices, "console", type="pty")
        ET.SubElement(console, "target", type="serial", port="0")
        return ET.tostring(root, encoding="unicode")

    def commands(self, method: str, name: str) -> list[list[str]]:
        g = self.guest
        if method == "virtkit":
            return [[*self.virtkit_create_args(name), "--start"]]
        if method in ("virsh", "minimal", "minimal+acpi"):
            xml_file = self.tmpdir / f"{name}.xml"
            if method == "virsh":
                xml = self.domain_xml(name)
            else:
                xml = self.minimal_xml(name, acpi=method == "minimal+acpi")
            xml_file.write_text(xml)
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

    def wait_output(self, path: Path) -> tuple[float, float]:
        """perf_counter() when the log first had a byte, and when it had the marker."""
        deadline = time.monotonic() + MARKER_TIMEOUT
        first: float | None = None
        while time.monotonic() < deadline:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = b""
            now = time.perf_counter()
            if data and first is None:
                first = now
            if self.guest.marker in data:
                return (first or now), now
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"no boot marker in {path} after {MARKER_TIMEOUT:.0f} s")

    def measure(self, method: str, name: str) -> Run:
        self.cleanup(name)  # a clean start, and no stale marker in the log
        commands = self.commands(method, name)  # XML prepared outside the clock
        try:
            start = time.perf_counter()
            for argv in commands:
                run(*argv, env=self.env)
            done = time.perf_counter()
            first, marker = self.wait_output(serial_log(name))
            return Run(first - start, marker - start, done - start)
        finally:
            self.cleanup(name)
            (self.tmpdir / f"{name}.xml").unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def summarize(results: dict[str, list[Run]], uri: str) -> dict[str, Any]:
    stats: dict[str, dict[str, float]] = {}
    for method, runs in results.items():
        boots = [r.boot for r in runs]
        stats[method] = {
            "median": statistics.median(boots),
            "min": min(boots),
            "max": max(boots),
            "first_byte_median": statistics.median(r.first for r in runs),
            "command_median": statistics.median(r.command for r in runs),
            "boot_after_command_median": statistics.median(r.boot - r.command for r in runs),
        }
    vk, base, vi = stats["virtkit"], stats[BASELINE], stats["virt-install"]
    vs_base = vk["median"] / base["median"]
    vs_vi = vk["median"] / vi["median"]
    own = vk["command_median"] - base["command_median"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "uri": uri,
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "runs": {
            m: [{"marker": r.boot, "first_byte": r.first, "command": r.command} for r in rs]
            for m, rs in results.items()
        },
        "stats": stats,
        "ratio_virtkit_minimal": vs_base,
        "ratio_virtkit_virt_install": vs_vi,
        "ratio_virtkit_virsh_same_xml": vk["median"] / stats["virsh"]["median"],
        "ratio_virtkit_minimal_acpi": vk["median"] / stats["minimal+acpi"]["median"],
        "own_time_over_minimal": own,
        "target_minimal_met": vs_base <= TARGET_VS_BASELINE,
        "target_virt_install_met": vs_vi < TARGET_VS_VIRT_INSTALL,
        "target_own_time_met": own <= TARGET_OWN_TIME,
    }


def print_table(summary: dict[str, Any], runs: int) -> None:
    print(f"\nseconds from command start to the boot marker, {runs} runs each ({summary['uri']});")
    print("1st byte: to the first byte on the console; boot after: marker minus command")
    head = ("median", "min", "max", "1st byte", "cmd med", "boot after")
    print(f"{'method':<14}" + "".join(f"{h:>11}" for h in head))
    for method, s in summary["stats"].items():
        cells = (s["median"], s["min"], s["max"], s["first_byte_median"],
                 s["command_median"], s["boot_after_command_median"])  # fmt: skip
        print(f"{method:<14}" + "".join(f"{c:11.3f}" for c in cells))
    print()
    verdict = {True: "met", False: "MISSED"}
    print(
        f"to marker, virtkit / minimal      {summary['ratio_virtkit_minimal']:.3f}  "
        f"(target <= {TARGET_VS_BASELINE:.2f}: {verdict[summary['target_minimal_met']]})"
    )
    print(
        f"to marker, virtkit / virt-install {summary['ratio_virtkit_virt_install']:.3f}  "
        f"(target <  {TARGET_VS_VIRT_INSTALL:.2f}: "
        f"{verdict[summary['target_virt_install_met']]})"
    )
    print(f"to marker, virtkit / virsh (same XML) {summary['ratio_virtkit_virsh_same_xml']:.3f}")
    print(
        f"to marker, virtkit / minimal+acpi {summary['ratio_virtkit_minimal_acpi']:.3f}  "
        "(the fair floor: a guest that can be shut down gracefully)"
    )
    print(
        f"command's own time, virtkit - minimal {summary['own_time_over_minimal']:+.3f} s  "
        f"(target <= {TARGET_OWN_TIME:.2f} s: {verdict[summary['target_own_time_met']]})"
    )


@contextlib.contextmanager
def private_libvirtd() -> Iterator[tuple[str, dict[str, str]]]:
    """A private libvirtd (QEMU as root) and the environment that points virtkit at it. Its
    host UUID is fixed, so that virtkit's KVM verdict for it is made once, not on every run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from testbed.libvirtd import PrivateLibvirtd

    daemon = PrivateLibvirtd(
        base=Path(tempfile.mkdtemp(prefix=f"{PREFIX}libvirtd-", dir="/var/tmp")),
        name="vkbench",
        host_uuid=PRIVATE_HOST_UUID,
    )
    with daemon:
        global LOG_DIR
        LOG_DIR = daemon.shared  # the same path inside the daemon's namespace and out here
        env = dict(os.environ, VIRTKIT_CONSOLE_LOG_DIR=str(LOG_DIR))
        yield daemon.uri, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per method (5)")
    parser.add_argument("--uri", default="qemu:///system", help="libvirt URI")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--private", action="store_true", help="run against a private libvirtd (QEMU as root)"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    methods = [m for m in METHODS if m in args.methods.split(",")]
    results: dict[str, list[Run]] = {m: [] for m in methods}
    with contextlib.ExitStack() as stack:
        uri, env = stack.enter_context(private_libvirtd()) if args.private else (args.uri, None)
        bench: Bench | None = None
        try:
            bench = Bench(uri, env)
            for rnd in range(args.runs + 1):  # round 0 is the warm-up, not counted
                for i in range(len(methods)):  # each round starts with another method
                    method = methods[(rnd + i) % len(methods)]
                    result = bench.measure(method, f"{PREFIX}{method.replace('-', '')}-{rnd}")
                    label = f"round {rnd}" if rnd else "warm-up"
                    line = (
                        f"{label:>8} {method:<13}{result.boot:7.3f} s (first byte "
                        f"{result.first:.3f} s, command {result.command:.3f} s)"
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
    if set(methods) != set(METHODS):
        for method, runs in results.items():
            boots = [r.boot for r in runs]
            print(f"{method:<14} marker {statistics.median(boots):.3f}  "
                  f"cmd {statistics.median(r.command for r in runs):.3f}")  # fmt: skip
        return
    summary = summarize(results, uri)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary, args.runs)


if __name__ == "__main__":
    main()
