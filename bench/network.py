#!/usr/bin/env python3
"""Guest addresses for many VMs: `virtkit vm ip` (one bulk query) against a `virsh domifaddr`
loop.

Inside a test host (its own network namespace and libvirtd, tests/testbed/hosts.py), N tiny guests
(``--guests``, 20) on one NAT network each get a DHCP lease. Then, interleaved, ``--runs`` times:

* ``virtkit vm ip --json``           -- every running VM's addresses, one CLI call
* ``Client.nics.addresses()``        -- the same in-process (the library's cost alone)
* ``virsh domifaddr NAME`` x N       -- the loop an administrator writes (lease source)

Both must report the same addresses. Goal: virtkit faster than the loop. The guests have no
QEMU guest agent (the tiny guest is busybox), so the agent source is not part of the timing;
virtkit asks the agent only for NICs the leases do not cover. Needs root.
Usage: ``.venv/bin/python bench/network.py [--guests 20] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import CACHE, host_bed
from tests.testbed.hosts import TestHosts

from virtkit.services.tinyguest import IP_MARKER, build_tiny_guest
from virtkit.specs import parse_network_spec, parse_vm_spec

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))


def timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    guest = build_tiny_guest(CACHE)
    with TestHosts(1, prefix="vkbench") as hosts:
        hb = host_bed(hosts[0], guest)
        vk = hb.client()
        env = hb.env()
        names = [f"vkbench-ip{i:02d}" for i in range(args.guests)]
        vk.networks.create(parse_network_spec({"name": "vkbench-net", "ipv4": "198.18.40.1/24"}))
        for name in names:
            vk.vms.create(parse_vm_spec({
                "name": name, "memory": "96M", "vcpus": 1, "kernel": guest.kernel,
                "initrd": guest.initrd, "cmdline": guest.cmdline,
                "nics": [{"network": "vkbench-net"}],
            }))  # fmt: skip
            vk.vms.start(name)
        deadline = time.monotonic() + 300
        for name in names:
            log = hb.log_dir / f"{name}-serial0.log"
            while IP_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
                if time.monotonic() > deadline:
                    sys.exit(f"{name} got no address within 300 s")
                time.sleep(0.5)
        while len(vk.networks.leases("vkbench-net")) < len(names):
            time.sleep(0.5)

        def virtkit_cli() -> dict[str, list[str]]:
            out = subprocess.run([VIRTKIT, "vm", "ip", "--json"], env=env, check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            return {n: sorted(a["ip"] for a in addrs) for n, addrs in json.loads(out).items()}

        def virtkit_lib() -> dict[str, list[str]]:
            return {n: sorted(a.ip for a in addrs) for n, addrs in vk.nics.addresses().items()}

        def virsh_loop() -> dict[str, list[str]]:
            found = {}
            for name in names:
                out = subprocess.run(["virsh", "-c", hb.settings.uri, "domifaddr", name],
                                     check=True, capture_output=True, text=True).stdout  # fmt: skip
                found[name] = sorted(
                    line.split()[3].split("/")[0] for line in out.splitlines()[2:] if line.strip()
                )
            return found

        methods = {"virtkit vm ip": virtkit_cli, "library": virtkit_lib, "virsh loop": virsh_loop}
        times: dict[str, list[float]] = {m: [] for m in methods}
        answers = {}
        for _ in range(args.runs):
            for label, fn in methods.items():
                seconds, answer = timed(fn)
                times[label].append(seconds)
                answers[label] = answer
        assert answers["virtkit vm ip"] == answers["virsh loop"] == answers["library"], answers
        assert all(len(v) == 1 for v in answers["virsh loop"].values()), answers
        for name in names:
            vk.vms.delete(name, force=True, remove_storage=True)
        vk.host.networks.undefine("vkbench-net")
        vk.close()
    medians = {m: statistics.median(t) for m, t in times.items()}
    for label, value in medians.items():
        print(f"{label:14} median {value * 1000:8.1f} ms over {args.runs} runs "
              f"({', '.join(f'{t * 1000:.0f}' for t in times[label])})")  # fmt: skip
    ratio = medians["virtkit vm ip"] / medians["virsh loop"]
    print(f"virtkit / virsh loop: {ratio:.2f} (goal < 1: {'met' if ratio < 1 else 'MISSED'}); "
          f"every VM reported the same address by both")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
            "guests": args.guests, "runs": args.runs, "times_s": times, "medians_s": medians,
            "ratio": ratio, "pid": os.getpid(),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
