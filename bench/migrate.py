#!/usr/bin/env python3
"""Several hosts (issue 16), side by side in one run, on test hosts in network namespaces
(tests/testbed/hosts.py), each its own libvirtd:

* Live migration of a 256 MiB tiny guest between two hosts, peer to peer: virtkit
  (``MigrationService.migrate``, its checks included; and the ``virtkit vm migrate`` CLI)
  against ``virsh migrate --live --p2p --persistent --undefinesource`` with the same flags,
  alternating, back and forth. Total time and downtime (libvirt's completed-job statistics).
  Goal: virtkit at most 1.05x virsh in both.
* A guest rewriting 48 MiB of memory over and over, with the migration limited to 16 MiB/s:
  plain pre-copy (given up after ``--precopy-timeout`` s) against ``--auto``.
* ``vm list`` across 3 hosts of ``--domains`` (200) inactive domains each: the concurrent
  listing (``Fleet.vms``) against the slowest single host's ``vms.list()``. Goal: at most 1.5x.

Needs root. ``.venv/bin/python bench/migrate.py [--runs 5] [--domains 200] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.testbed.hosts import TestHosts  # noqa: E402

from virtkit import Client, Settings  # noqa: E402
from virtkit.services.tinyguest import BOOT_MARKER, DIRTY_MARKER, build_tiny_guest  # noqa: E402
from virtkit.specs import MigrateOptions, parse_vm_spec  # noqa: E402

CACHE = ROOT / ".cache" / "tests"
VIRTKIT = str(Path(sys.executable).with_name("virtkit"))


def wait_log(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not in {log}")


def downtime_on(uri: str, name: str) -> int | None:
    conn = libvirt.open(uri)
    try:
        stats = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        value = stats.get("downtime")
        return None if value is None else int(value)
    finally:
        conn.close()


class Bench:
    def __init__(self, hosts: TestHosts, base: Path) -> None:
        self.hosts = hosts
        (base / "logs").mkdir()
        self.settings = Settings(
            uri=hosts[0].uri, cache_dir=CACHE / "hosts", state_dir=base / "state",
            console_log_dir=base / "logs", storage_pool="vkbench-pool",
            storage_pool_path=base / "images", kvm_probe_timeout=8.0,
        )  # fmt: skip
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "VIRTKIT_CONFIG": "/nonexistent",
            "VIRTKIT_URI": hosts[0].uri,
            "VIRTKIT_STATE_DIR": str(base / "state"),
            "VIRTKIT_CACHE_DIR": str(CACHE / "hosts"),
            "VIRTKIT_CONSOLE_LOG_DIR": str(base / "logs"),
        }
        self.vk = Client(settings=self.settings)
        for i, h in enumerate(hosts):
            self.vk.fleet.add(f"h{i + 1}", h.uri, probe=False, migration_uri=h.tcp_uri)
        self.guest = build_tiny_guest(CACHE)

    def client(self, i: int) -> Client:
        return self.vk.for_uri(self.hosts[i].uri)

    def boot(self, name: str, memory: str, *extra: str) -> None:
        spec = {
            "name": name,
            "memory": memory,
            "vcpus": 1,
            "kernel": self.guest.kernel,
            "initrd": self.guest.initrd,
            "cmdline": " ".join([self.guest.cmdline, *extra]),
        }
        with self.client(0) as vk:
            vk.vms.create(parse_vm_spec(spec), start=True)
        wait_log(self.settings.console_log_dir / f"{name}-serial0.log", BOOT_MARKER)

    def delete(self, name: str) -> None:
        for i in range(len(self.hosts.hosts)):
            with self.client(i) as vk:
                if vk.host.exists(name):
                    vk.vms.delete(name, force=True)

    # -- virtkit against virsh ----------------------------------------------------------

    def side_by_side(self, runs: int) -> dict[str, Any]:
        name = "vkbench-mig"
        self.boot(name, "256M")
        rows: dict[str, list[tuple[float, int | None]]] = {"virsh": [], "virtkit": [],
                                                           "virtkit_cli": []}  # fmt: skip
        where = 0
        try:
            for run in range(runs):
                for kind in (("virsh", "virtkit", "virtkit_cli") if run % 2 == 0
                             else ("virtkit_cli", "virtkit", "virsh")):  # fmt: skip
                    src, dst = where, 1 - where
                    start = time.perf_counter()
                    if kind == "virsh":
                        subprocess.run(
                            ["virsh", "-c", self.hosts[src].uri, "migrate", "--live", "--p2p",
                             "--persistent", "--undefinesource", name, self.hosts[dst].tcp_uri],
                            check=True, capture_output=True,
                        )  # fmt: skip
                    elif kind == "virtkit":
                        with self.vk.fleet.migration(f"h{src + 1}", f"h{dst + 1}") as service:
                            result = service.migrate(name, MigrateOptions())
                    else:
                        done = subprocess.run(
                            [VIRTKIT, "vm", "migrate", f"{name}@h{src + 1}", "--to",
                             f"h{dst + 1}", "--json"], check=True, capture_output=True,
                            env=self.env, text=True,
                        )  # fmt: skip
                    took = time.perf_counter() - start
                    # (virtkit reads libvirt's completed-job statistics itself: they are read once)
                    if kind == "virsh":
                        downtime = downtime_on(self.hosts[dst].uri, name)
                    elif kind == "virtkit":
                        downtime = result.downtime_ms
                    else:
                        downtime = json.loads(done.stdout)["downtime_ms"]
                    rows[kind].append((took, downtime))
                    where = dst
        finally:
            self.delete(name)

        def med(kind: str, i: int) -> float:
            return statistics.median(float(r[i] or 0) for r in rows[kind])

        result = {k: {"seconds": med(k, 0), "downtime_ms": med(k, 1), "runs": rows[k]}
                  for k in rows}  # fmt: skip
        result["ratio_time"] = med("virtkit", 0) / med("virsh", 0)  # type: ignore[assignment]
        result["ratio_time_cli"] = med("virtkit_cli", 0) / med("virsh", 0)  # type: ignore[assignment]
        result["ratio_downtime"] = med("virtkit", 1) / max(med("virsh", 1), 1)  # type: ignore[assignment]
        return result

    # -- a fast-dirtying guest: plain pre-copy against --auto ---------------------------

    def auto(self, precopy_timeout: float) -> dict[str, Any]:
        name = "vkbench-dirty"
        self.boot(name, "192M", "virtkit.dirty=48")
        wait_log(self.settings.console_log_dir / f"{name}-serial0.log", DIRTY_MARKER)
        out: dict[str, Any] = {}
        try:
            for label, opts in (
                ("precopy", MigrateOptions(bandwidth_mib=16, timeout=precopy_timeout)),
                ("auto", MigrateOptions(bandwidth_mib=16, auto=True)),
            ):
                start = time.perf_counter()
                try:
                    with self.vk.fleet.migration("h1", "h2") as service:
                        r = service.migrate(name, opts)
                    out[label] = {"ok": True, "seconds": time.perf_counter() - start,
                                  "downtime_ms": r.downtime_ms, "mode": r.mode,
                                  "dirty_rate": r.plan.dirty_rate,
                                  "predicted_seconds": r.plan.predicted_seconds}  # fmt: skip
                except Exception as exc:
                    out[label] = {"ok": False, "seconds": time.perf_counter() - start,
                                  "error": str(exc)}  # fmt: skip
        finally:
            self.delete(name)
        return out

    # -- vm list across hosts -----------------------------------------------------------

    def listing(self, domains: int, runs: int) -> dict[str, Any]:
        for i in range(len(self.hosts.hosts)):
            conn = libvirt.open(self.hosts[i].uri)
            for n in range(domains):
                conn.defineXML(
                    f"<domain type='qemu'><name>vkbench-l{i}-{n:03d}</name>"
                    f"<uuid>{uuid.uuid4()}</uuid><memory unit='MiB'>64</memory>"
                    "<vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>"
                    "</domain>"
                )  # fmt: skip
            conn.close()
        try:
            singles: list[list[float]] = [[] for _ in self.hosts.hosts]
            fleet: list[float] = []
            cli: dict[str, list[float]] = {"all": []}
            clients = [self.client(i) for i in range(len(self.hosts.hosts))]
            for c in clients:
                c.vms.list()  # warm
            self.vk.fleet.vms()
            for _ in range(runs):
                for i, c in enumerate(clients):
                    start = time.perf_counter()
                    c.vms.list()
                    singles[i].append(time.perf_counter() - start)
                start = time.perf_counter()
                listed = self.vk.fleet.vms()
                fleet.append(time.perf_counter() - start)
                assert sum(len(h.vms) for h in listed) == domains * len(self.hosts.hosts)
                for label, args in (
                    ("all", []),
                    *(("one", ["--host", f"h{i + 1}"]) for i in range(len(self.hosts.hosts))),
                ):
                    start = time.perf_counter()
                    subprocess.run([VIRTKIT, *args, "vm", "list"], check=True,
                                   capture_output=True, env=self.env)  # fmt: skip
                    cli.setdefault(label, []).append(time.perf_counter() - start)
            for c in clients:
                c.close()
        finally:
            for i in range(len(self.hosts.hosts)):
                conn = libvirt.open(self.hosts[i].uri)
                for dom in conn.listAllDomains():
                    if re.match(r"vkbench-l\d+-", dom.name()):
                        dom.undefine()
                conn.close()
        slowest = max(statistics.median(s) for s in singles)
        # the concurrent listing makes a client per host: a new connection each time
        return {"domains_per_host": domains, "hosts": len(self.hosts.hosts),
                "single_ms": [statistics.median(s) * 1000 for s in singles],
                "fleet_ms": statistics.median(fleet) * 1000,
                "ratio": statistics.median(fleet) / slowest,
                "cli_one_host_ms": max(statistics.median(v) for k, v in cli.items()
                                       if k != "all") * 1000,
                "cli_all_hosts_ms": statistics.median(cli["all"]) * 1000,
                "cli_ratio": statistics.median(cli["all"]) / max(
                    statistics.median(v) for k, v in cli.items() if k != "all")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--precopy-timeout", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vkbench-mig-") as tmp, \
            TestHosts(3, prefix="vkbm") as hosts:  # fmt: skip
        bench = Bench(hosts, Path(tmp))
        try:
            report = {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": platform.node(),
                "migration": bench.side_by_side(args.runs),
                "auto": bench.auto(args.precopy_timeout),
                "listing": bench.listing(args.domains, max(3, args.runs)),
            }
        finally:
            bench.vk.close()
    m = report["migration"]
    print(f"migration 256 MiB (median of {args.runs}): virsh {m['virsh']['seconds']:.2f} s "
          f"downtime {m['virsh']['downtime_ms']:.0f} ms; virtkit {m['virtkit']['seconds']:.2f} s "
          f"downtime {m['virtkit']['downtime_ms']:.0f} ms ({m['ratio_time']:.2f}x time, "
          f"{m['ratio_downtime']:.2f}x downtime); virtkit CLI {m['virtkit_cli']['seconds']:.2f} s "
          f"({m['ratio_time_cli']:.2f}x)")  # fmt: skip
    for label, r in report["auto"].items():
        print(f"dirtying guest, {label}: " + json.dumps(r))
    ls = report["listing"]
    print(f"vm list, {ls['hosts']} hosts x {ls['domains_per_host']}: single hosts "
          f"{', '.join(f'{x:.1f}' for x in ls['single_ms'])} ms; across hosts "
          f"{ls['fleet_ms']:.1f} ms ({ls['ratio']:.2f}x the slowest); CLI one host (slowest) "
          f"{ls['cli_one_host_ms']:.0f} ms, all {ls['cli_all_hosts_ms']:.0f} ms "
          f"({ls['cli_ratio']:.2f}x)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
