#!/usr/bin/env python3
"""``virtkit plan`` of a site of 200 VMs against ``vm list`` of the same VMs (issue 18).

A private libvirtd (tests/testbed/libvirtd.py) gets N inactive domains (``--domains``, 200 by
default) that a site file describes exactly (``replicas: N``, state shutoff), each marked as
the site's with its spec digests, as ``virtkit apply`` leaves them: the plan of the steady
state, which must find nothing to do. Then, each measured ``--runs`` times (medians):

* ``Client.vms.list()`` warm, and ``Client.sites.plan(site)`` warm (one long-lived client);
* ``virtkit vm list`` and ``virtkit plan -f site.yaml`` (a new process each).

Goal: the plan costs at most 2x the listing of the same VMs (one bulk listing per host).
Multi-host sites wait for the multi-host issue: one host here. Needs root.
``.venv/bin/python bench/plan.py [--domains 200]``.
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
from typing import Any

import libvirt
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed.libvirtd import PrivateLibvirtd

import virtkit
from virtkit.services.siteplan import encode_parts, spec_parts
from virtkit.specs.site import Site
from virtkit.xml.domain import OS, Domain, Tag

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
SITE = "vkbench"


def site_doc(count: int) -> dict[str, Any]:
    return {
        "site": SITE,
        "vms": [
            {
                "name": "vkbench-plan-{n}",
                "replicas": count,
                "memory": "128M",
                "state": "shutoff",
                "tags": ["role=bench"],
                "kernel": "/boot/none",
            }
        ],
    }


def domain_xml(site: Site, name: str) -> str:
    spec = site.vms[0].instance_spec(name)
    dom = Domain()
    dom.type = "qemu"
    dom.name = name
    dom.uuid = str(uuid.uuid4())
    dom.memory_kib = spec.memory // 1024
    dom.memory_unit = "KiB"
    dom.vcpu = spec.vcpus
    os_el = OS()
    os_el.type = "hvm"
    os_el.arch = "x86_64"
    os_el.machine = "q35"
    dom.os = os_el
    meta = dom.ensure_virtkit_metadata()
    meta.version = virtkit.__version__
    for value in spec.tags:
        tag = Tag()
        tag.name = value
        meta.tags.append(tag)
    meta.site = SITE
    meta.site_spec = encode_parts(spec_parts(spec))
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
    work = Path(tempfile.mkdtemp(prefix="vkbench-plan-"))
    doc = site_doc(count)
    (work / "site.yaml").write_text(yaml.safe_dump(doc))
    site = Site.model_validate(doc)
    with PrivateLibvirtd(name="vkbench-plan") as daemon:
        conn = libvirt.open(daemon.uri)
        for n in range(1, count + 1):
            conn.defineXML(domain_xml(site, f"vkbench-plan-{n}"))
        settings = virtkit.Settings(uri=daemon.uri, cache_dir=work / "cache", state_dir=work)
        env = {
            **os.environ,
            "VIRTKIT_URI": daemon.uri,
            "VIRTKIT_CACHE_DIR": str(work / "cache"),
            "VIRTKIT_STATE_DIR": str(work),
            "VIRTKIT_CONFIG": "/nonexistent",
        }
        warm = virtkit.Client(settings=settings)
        assert len(warm.vms.list()) == count
        plan = warm.sites.plan(site)
        assert plan.empty, [c.model_dump() for c in plan.changes[:3]]
        results = {
            "list_warm_ms": median_ms(warm.vms.list, runs),
            "plan_warm_ms": median_ms(lambda: warm.sites.plan(site), runs),
            "cli_list_ms": median_ms(lambda: run_cli([VIRTKIT, "vm", "list"], env), runs),
            "cli_plan_ms": median_ms(
                lambda: run_cli([VIRTKIT, "plan", "-f", str(work / "site.yaml")], env), runs
            ),
        }
        warm.close()
        for dom in conn.listAllDomains(0):
            dom.undefine()
        conn.close()
    results["plan_vs_list"] = results["plan_warm_ms"] / results["list_warm_ms"]
    results["cli_plan_vs_list"] = results["cli_plan_ms"] / results["cli_list_ms"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, nargs="+", default=[200])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "runs": args.runs,
        "results": {str(n): measure(n, args.runs) for n in args.domains},
    }
    print(f"{'domains':>8} {'list':>8} {'plan':>8} {'plan/list':>10} {'cli list':>9} "
          f"{'cli plan':>9} {'cli p/l':>8}")  # fmt: skip
    for n, r in report["results"].items():
        print(
            f"{n:>8} {r['list_warm_ms']:8.1f} {r['plan_warm_ms']:8.1f} {r['plan_vs_list']:10.2f} "
            f"{r['cli_list_ms']:9.1f} {r['cli_plan_ms']:9.1f} {r['cli_plan_vs_list']:8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
