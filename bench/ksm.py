#!/usr/bin/env python3
"""KSM tuning benchmark: memory saved, how fast, and at what ksmd CPU cost.

The same guests for every strategy: N tiny guests (``--guests``, 256 MiB each) that fill a tmpfs
with the same ``--fill`` MiB of data, under a private libvirtd. Each strategy starts from cold
(every page unmerged, KSM stopped, the kernel's default scan settings) and runs for
``--duration`` seconds while general_profit and ksmd's CPU time are sampled twice a second:

* ``ksmtuned``         -- Debian's ksmtuned script, run by hand with its default configuration
* ``ksmtuned-engaged`` -- the same script with a threshold just above the host's free memory (as
                          on a host under memory pressure), so that it engages
* ``adaptive``         -- ``virtkit ksm tune --policy adaptive``
* ``aggressive``       -- a fixed ``pages_to_scan=5000 sleep_millisecs=10``

Reported per strategy: final MB saved, seconds to 90% of it, ksmd CPU-seconds, MB per
CPU-second; then the goals of the KSM issue as ratios. Also the estimate's speed (GiB/s) on the
same guests. Every KSM setting is put back as found. Needs root and the ``ksmtuned`` package
for the ksmtuned strategies. Usage: ``.venv/bin/python bench/ksm.py [--duration 180]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed.libvirtd import PrivateLibvirtd

from virtkit import Client, Settings
from virtkit.ksm.sysfs import KNOBS, KsmSysfs, ksmd_cpu_seconds
from virtkit.services.tinyguest import FILL_MARKER, build_tiny_guest
from virtkit.specs import parse_vm_spec

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "vkbench-ksm"
STRATEGIES = ("ksmtuned", "ksmtuned-engaged", "adaptive", "aggressive")
SYSFS = KsmSysfs()
COLD = {"pages_to_scan": "100", "sleep_millisecs": "20", "advisor_mode": "none"}
VIRTKIT = str(Path(sys.executable).with_name("virtkit"))


@dataclass
class Result:
    strategy: str
    saved_mb: float = 0.0
    to_90_s: float | None = None
    cpu_s: float = 0.0
    mb_per_cpu_s: float = 0.0
    trace: list[tuple[float, float, float]] = field(default_factory=list)  # t, MB, CPU-s


def unmerge_cold() -> None:
    SYSFS.write("run", "2")
    deadline = time.monotonic() + 120
    while (SYSFS.read_int("pages_shared") or 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    SYSFS.write("run", "0")
    for name, value in COLD.items():
        if SYSFS.read(name) is not None:
            SYSFS.write(name, value)


def free_kb() -> int:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["MemFree"] + fields["Buffers"] + fields["Cached"]


class Running:
    """A strategy's process, started in its own session and ended by its process group."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None):
        out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_ksmtuned(work: Path, engaged: bool) -> tuple[Running, Path]:
    """ksmtuned forks its loop and exits; the loop's PID lands in PIDFILE. Our copy reads our own
    configuration file instead of /etc/ksmtuned.conf; nothing else changes."""
    script = Path("/usr/sbin/ksmtuned")
    conf = work / "ksmtuned.conf"
    lines = ["DEBUG=1", f"LOGFILE={work / 'ksmtuned.log'}"]
    if engaged:
        # the free-memory threshold (kB) just above what is free now: a host under pressure
        lines += ["KSM_THRES_COEF=0", f"KSM_THRES_CONST={free_kb() + 384 * 1024}"]
    conf.write_text("\n".join(lines) + "\n")
    copy = work / "ksmtuned"
    copy.write_text(script.read_text().replace("/etc/ksmtuned.conf", str(conf)))
    copy.chmod(0o755)
    pidfile = work / "ksmtuned.pid"
    env = {**os.environ, "PIDFILE": str(pidfile)}
    # the forked loop stays in the process group Running made (its own session), which
    # Running.stop ends; nothing else is in it
    return Running(["bash", str(copy)], env=env), pidfile


def run_strategy(name: str, duration: float, work: Path, env: dict[str, str]) -> Result:
    unmerge_cold()
    cpu0 = ksmd_cpu_seconds() or 0.0
    started = time.monotonic()
    runner: Running | None = None
    if name == "aggressive":
        SYSFS.write("pages_to_scan", "5000")
        SYSFS.write("sleep_millisecs", "10")
        SYSFS.write("run", "1")
    elif name == "adaptive":
        runner = Running(
            [VIRTKIT, "ksm", "tune", "--policy", "adaptive", "--no-history"],
            env=env, log=work / "adaptive.log",
        )  # fmt: skip
    elif name.startswith("ksmtuned"):
        runner, _pidfile = start_ksmtuned(work, engaged=name == "ksmtuned-engaged")
    result = Result(name)
    try:
        while (now := time.monotonic() - started) < duration:
            profit = (SYSFS.read_int("general_profit") or 0) / 1e6
            cpu = (ksmd_cpu_seconds() or 0.0) - cpu0
            result.trace.append((round(now, 2), round(profit, 1), round(cpu, 2)))
            time.sleep(0.5)
    finally:
        if runner:
            runner.stop()
        SYSFS.write("run", "0")
    final = result.trace[-1]
    result.saved_mb, result.cpu_s = final[1], final[2]
    result.mb_per_cpu_s = result.saved_mb / result.cpu_s if result.cpu_s else 0.0
    if result.saved_mb > 0:
        result.to_90_s = next(t for t, mb, _ in result.trace if mb >= 0.9 * result.saved_mb)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=4)
    parser.add_argument("--memory-mib", type=int, default=256)
    parser.add_argument("--fill", type=int, default=128, help="MiB of identical data per guest")
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]
    if (
        any(s.startswith("ksmtuned") for s in strategies)
        and not Path("/usr/sbin/ksmtuned").exists()
    ):
        sys.exit("install the ksmtuned package (apt-get install ksmtuned) or drop those strategies")
    found = SYSFS.settings()
    guest = build_tiny_guest(ROOT / ".cache" / "tests")
    daemon = PrivateLibvirtd(name="vkbench")
    work = Path(tempfile.mkdtemp(prefix="vkbench-ksm-"))
    shared = daemon.shared
    (shared / "logs").mkdir(parents=True, exist_ok=True)
    settings = Settings(
        uri=daemon.uri, cache_dir=shared / "cache", storage_pool="vkbench-pool",
        storage_pool_path=shared / "images", console_log_dir=shared / "logs",
        kvm_probe_timeout=8.0, ksm_history=work / "history.sqlite",
    )  # fmt: skip
    env = {**os.environ, "VIRTKIT_URI": daemon.uri, "VIRTKIT_CONFIG": "/nonexistent",
           "VIRTKIT_STATE_DIR": str(work / "state")}  # fmt: skip
    names = [f"{PREFIX}{i}" for i in range(args.guests)]
    results: list[Result] = []
    daemon.start()
    try:
        with Client(settings=settings) as vk:
            for name in names:
                vk.vms.create(
                    parse_vm_spec({
                        "name": name, "memory": f"{args.memory_mib}M", "vcpus": 1,
                        "kernel": guest.kernel, "initrd": guest.initrd,
                        "cmdline": f"{guest.cmdline} virtkit.fill={args.fill}",
                    })
                )  # fmt: skip
                vk.vms.start(name)
            deadline = time.monotonic() + 180
            for name in names:
                log = shared / "logs" / f"{name}-serial0.log"
                while FILL_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
                    if time.monotonic() > deadline:
                        sys.exit(f"{name} did not fill its memory within 180 s")
                    time.sleep(0.5)
            time.sleep(2)
            unmerge_cold()
            estimate = vk.ksm.estimate(names)
            gib = estimate.pages * 4096 / 2**30
            print(f"estimate: {estimate.saved_nonzero / 1e6:.0f} MB of duplicates would merge, "
                  f"{estimate.zero_pages} zero pages apart "
                  f"({estimate.gib_per_second:.2f} GiB/s over {gib:.2f} GiB)")  # fmt: skip
            for name in strategies:
                result = run_strategy(name, args.duration, work, env)
                results.append(result)
                r = result
                print(f"{name:17} saved {r.saved_mb:7.1f} MB  to-90% {r.to_90_s} s  "
                      f"ksmd {r.cpu_s:6.2f} CPU-s  {r.mb_per_cpu_s:7.1f} MB/CPU-s")  # fmt: skip
                sys.stdout.flush()
            for name in names:
                vk.vms.delete(name, force=True, remove_storage=True)
    finally:
        try:
            unmerge_cold()
            for name, value in found.items():
                if name != "run" and KNOBS.get(name) and SYSFS.read(name) != value:
                    SYSFS.write(name, value)
            SYSFS.write("run", found.get("run", "0"))
        finally:
            daemon.stop()
            daemon.cleanup()
    by = {r.strategy: r for r in results}
    summary: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
        "guests": args.guests, "memory_mib": args.memory_mib, "fill_mib": args.fill,
        "duration_s": args.duration, "estimate_gib_per_s": round(estimate.gib_per_second, 2),
        "estimate_saved_mb": round(estimate.saved_nonzero / 1e6, 1),
        "results": [{k: v for k, v in asdict(r).items() if k != "trace"} for r in results],
    }  # fmt: skip
    if "adaptive" in by and "aggressive" in by:
        a, g = by["adaptive"], by["aggressive"]
        ratios = {
            "saved_vs_aggressive": a.saved_mb / g.saved_mb if g.saved_mb else None,
            "cpu_vs_aggressive": a.cpu_s / g.cpu_s if g.cpu_s else None,
            "to_90_vs_aggressive": (a.to_90_s / g.to_90_s)
            if a.to_90_s is not None and g.to_90_s else None,
        }  # fmt: skip
        if "ksmtuned-engaged" in by and by["ksmtuned-engaged"].saved_mb:
            ratios["saved_vs_ksmtuned_engaged"] = a.saved_mb / by["ksmtuned-engaged"].saved_mb
        summary["ratios"] = ratios
        goals = [
            ("saved >= 95% of aggressive", ratios["saved_vs_aggressive"], lambda r: r >= 0.95),
            ("ksmd CPU <= 15% of aggressive", ratios["cpu_vs_aggressive"], lambda r: r <= 0.15),
            ("time to 90% <= 3x aggressive", ratios["to_90_vs_aggressive"], lambda r: r <= 3),
            ("saved >= 1.2x engaged ksmtuned", ratios.get("saved_vs_ksmtuned_engaged"),
             lambda r: r >= 1.2),
        ]  # fmt: skip
        for label, value, ok in goals:
            verdict = "n/a" if value is None else ("met" if ok(value) else "MISSED")
            shown = "-" if value is None else f"{value:.2f}"
            print(f"  {label:32} {shown:>6}  {verdict}")
    if args.json:
        args.json.write_text(
            json.dumps(summary | {"traces": {r.strategy: r.trace for r in results}})
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
