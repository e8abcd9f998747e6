#!/usr/bin/env python3
"""Listing VMs at the speed of libvirt (issue 12, part 2).

A private libvirtd (tests/testbed/libvirtd.py) gets N inactive domains (``--domains``, 200 and
1000 by default), each with virtkit's metadata (a tag), as virtkit defines them. Then, in one
run, each measured ``--runs`` times (medians):

* ``getAllDomainStats`` (state, balloon, vcpu)  -- one bulk call: the libvirt floor
* ``Client.vms.list()`` warm                    -- a long-lived client (API, dashboard, scrape)
* ``Client.vms.list()`` cold                    -- a new client's first call (store copy of tags)
* ``virsh list --all``                          -- the CLI floor
* ``virtkit vm list``                           -- the CLI table
* ``virtkit --help``                            -- CLI start-up

Goals: warm list <= 2x the bulk call; the CLI table <= 3x ``virsh list --all``; start-up <= 120
ms; cost linear in N. Needs root. ``.venv/bin/python bench/list.py [--domains 200 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed.libvirtd import PrivateLibvirtd

import virtkit
from virtkit.xml.domain import OS, Domain, Tag

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)


def domain_xml(name: str, index: int) -> str:
    dom = Domain()
    dom.type = "qemu"
    dom.name = name
    dom.uuid = str(uuid.uuid4())
    dom.memory_kib = 128 * 1024
    dom.memory_unit = "KiB"
    dom.vcpu = 1
    os_el = OS()
    os_el.type = "hvm"
    os_el.arch = "x86_64"
    os_el.machine = "q35"
    dom.os = os_el
    meta = dom.ensure_virtkit_metadata()
    meta.version = virtkit.__version__
    tag = Tag()
    tag.name = f"group{index % 10}"
    meta.tags.append(tag)
    return dom.to_xml()


def median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def run_cli(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(count: int, runs: int) -> dict[str, float]:
    with PrivateLibvirtd(name="vkbench-list") as daemon:
        conn = libvirt.open(daemon.uri)
        for i in range(count):
            conn.defineXML(domain_xml(f"vkbench-list-{i:05d}", i))
        state = Path(tempfile.mkdtemp(prefix="vkbench-list-"))
        settings = virtkit.Settings(uri=daemon.uri, cache_dir=state / "cache", state_dir=state)
        env = {
            **os.environ,
            "VIRTKIT_URI": daemon.uri,
            "VIRTKIT_CACHE_DIR": str(state / "cache"),
            "VIRTKIT_STATE_DIR": str(state),
            "VIRTKIT_CONFIG": "/nonexistent",
        }
        warm = virtkit.Client(settings=settings)
        listed = warm.vms.list()  # the first call reads each domain's tags once, and keeps them
        assert len(listed) == count and all(v.tags for v in listed), "tags missing"
        results = {
            "bulk_ms": median_ms(lambda: conn.getAllDomainStats(STATS, 0), runs),
            "list_warm_ms": median_ms(warm.vms.list, runs),
        }

        def cold() -> None:
            with virtkit.Client(settings=settings) as client:
                client.vms.list()

        results["list_cold_ms"] = median_ms(cold, runs)
        virsh = ["virsh", "-c", daemon.uri, "list", "--all"]
        results["virsh_ms"] = median_ms(lambda: run_cli(virsh, env), runs)
        results["cli_list_ms"] = median_ms(lambda: run_cli([VIRTKIT, "vm", "list"], env), runs)
        results["cli_help_ms"] = median_ms(lambda: run_cli([VIRTKIT, "--help"], env), runs)
        warm.close()
        for dom in conn.listAllDomains(0):
            dom.undefine()
        conn.close()
    results["warm_vs_bulk"] = results["list_warm_ms"] / results["bulk_ms"]
    results["cli_vs_virsh"] = results["cli_list_ms"] / results["virsh_ms"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "runs": args.runs,
        "results": {str(n): measure(n, args.runs) for n in args.domains},
    }
    print(f"{'domains':>8} {'bulk':>8} {'warm':>8} {'cold':>8} {'virsh':>8} {'cli':>8} "
          f"{'--help':>8} {'warm/bulk':>10} {'cli/virsh':>10}")  # fmt: skip
    for n, r in report["results"].items():
        print(
            f"{n:>8} {r['bulk_ms']:8.1f} {r['list_warm_ms']:8.1f} {r['list_cold_ms']:8.1f} "
            f"{r['virsh_ms']:8.1f} {r['cli_list_ms']:8.1f} {r['cli_help_ms']:8.1f} "
            f"{r['warm_vs_bulk']:10.2f} {r['cli_vs_virsh']:10.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
