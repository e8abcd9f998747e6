#!/usr/bin/env python3
"""virtkit's Prometheus exporter against Debian's prometheus-libvirt-exporter (issue 15).

A private libvirtd (tests/testbed/libvirtd.py) gets ``--running`` (4) tiny guests with a disk
each, running, and ``--inactive`` (200) inactive domains with virtkit's metadata (as
bench/list.py makes them). Both exporters run side by side against it, each scraped
``--scrapes`` (20) times in turns, the way Prometheus scrapes (``Accept-Encoding: gzip``):

* median and p90 scrape time (request to last byte);
* exporter CPU per scrape (user + system of the exporter process over the scrapes);
* series per exporter, and which of the Go exporter's metric names virtkit also has.

Goals: virtkit's median <= 1.0x the Go exporter's; its CPU per scrape <= 2x the Go one's.
Needs root and ``apt install prometheus-libvirt-exporter``.
``.venv/bin/python bench/exporter.py [--scrapes 20] [--json]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from list import domain_xml  # noqa: E402
from tests.integration.apiserver import free_port  # noqa: E402
from tests.testbed.libvirtd import PrivateLibvirtd  # noqa: E402

import virtkit  # noqa: E402
from virtkit.services.tinyguest import build_tiny_guest  # noqa: E402

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
GO = shutil.which("prometheus-libvirt-exporter") or "/usr/bin/prometheus-libvirt-exporter"
PREFIX = "vkbench-exp-"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> tuple[float, str]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        encoding = response.headers.get("Content-Encoding")
    elapsed = time.perf_counter() - start
    text = (gzip.decompress(body) if encoding == "gzip" else body).decode()
    return elapsed, text


def wait_up(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            scrape(url)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"exporter at {url} did not answer")


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def names(text: str) -> set[str]:
    """Metric names, without the Go runtime's and the HTTP handler's own (go_, process_,
    promhttp_): those describe the exporter process, not libvirt."""
    found = {line.split("{", 1)[0].split(" ", 1)[0] for line in series(text)}
    return {n for n in found if not n.startswith(("go_", "process_", "promhttp_"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=4)
    parser.add_argument("--inactive", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    guest = build_tiny_guest(ROOT / ".cache" / "tests")
    with PrivateLibvirtd(name="vkbench-exp") as daemon:
        shared = daemon.shared
        for sub in ("images", "logs"):
            (shared / sub).mkdir(parents=True, exist_ok=True)
        settings = virtkit.Settings(
            uri=daemon.uri, cache_dir=shared / "cache", state_dir=shared / "state",
            storage_pool="vkbench-exp-pool", storage_pool_path=shared / "images",
            console_log_dir=shared / "logs", kvm_probe_timeout=8.0,
        )  # fmt: skip
        conn = libvirt.open(daemon.uri)
        with virtkit.Client(settings=settings) as vk:
            for i in range(args.running):
                spec = virtkit.VMSpec(
                    name=f"{PREFIX}run{i}", memory="128M", kernel=guest.kernel,
                    initrd=guest.initrd, cmdline=guest.cmdline, disks=[{"size": "64M"}],
                )  # fmt: skip
                vk.vms.create(spec, start=True)
            for i in range(args.inactive):
                conn.defineXML(domain_xml(f"{PREFIX}off{i:04d}", i))
            env = {
                **os.environ, "VIRTKIT_URI": daemon.uri, "VIRTKIT_CONFIG": "/nonexistent",
                "VIRTKIT_CACHE_DIR": str(settings.cache_dir),
                "VIRTKIT_STATE_DIR": str(settings.state_dir),
            }  # fmt: skip
            ours_port, go_port = free_port(), free_port()
            ours = subprocess.Popen(
                [VIRTKIT, "exporter", "--listen", f"127.0.0.1:{ours_port}"], env=env,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            go = subprocess.Popen(
                [GO, f"--web.listen-address=127.0.0.1:{go_port}", f"--libvirt.uri={daemon.uri}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                urls = {
                    "virtkit": f"http://127.0.0.1:{ours_port}/metrics",
                    "go": f"http://127.0.0.1:{go_port}/metrics",
                }
                pids = {"virtkit": ours.pid, "go": go.pid}
                for url in urls.values():
                    wait_up(url)
                    for _ in range(3):  # warm: connections, caches, the KVM verdict
                        scrape(url)
                time.sleep(2)
                times: dict[str, list[float]] = {k: [] for k in urls}
                cpu: dict[str, float] = dict.fromkeys(urls, 0.0)
                texts: dict[str, str] = {}
                own: list[float] = []  # virtkit's own account of each scrape's collection
                whole: list[float] = []  # ... and of the previous scrape, families included
                for _ in range(args.scrapes):
                    for key, url in urls.items():  # in turns: drift hits both alike
                        before = cpu_seconds(pids[key])
                        elapsed, texts[key] = scrape(url)
                        cpu[key] += cpu_seconds(pids[key]) - before
                        times[key].append(elapsed)
                        if key == "virtkit":
                            own.extend(
                                float(line.rsplit(" ", 1)[1])
                                for line in texts[key].splitlines()
                                if line.startswith("virtkit_host_scrape_duration_seconds{")
                            )
                            whole.extend(
                                float(line.rsplit(" ", 1)[1])
                                for line in texts[key].splitlines()
                                if line.startswith("virtkit_scrape_duration_seconds ")
                            )
                        time.sleep(0.05)
            finally:
                for proc in (ours, go):
                    proc.terminate()
                    proc.wait(timeout=10)
            for i in range(args.running):
                vk.vms.delete(f"{PREFIX}run{i}", force=True, remove_storage=True)
        for dom in conn.listAllDomains(0):
            dom.undefine()
        conn.close()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "running": args.running, "inactive": args.inactive, "scrapes": args.scrapes,
    }  # fmt: skip
    for key in urls:
        ordered = sorted(times[key])
        result[key] = {
            "median_ms": statistics.median(ordered) * 1000,
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
            "cpu_ms_per_scrape": cpu[key] / args.scrapes * 1000,
            "series": len(series(texts[key])),
            "series_of_libvirt": sum(  # without the exporter process's own (go_, process_)
                1
                for line in series(texts[key])
                if not line.startswith(("go_", "process_", "promhttp_"))
            ),
            "metric_names": len(names(texts[key])),
        }
    result["virtkit"]["collect_median_ms"] = statistics.median(own) * 1000 if own else None
    result["virtkit"]["scrape_median_ms"] = statistics.median(whole) * 1000 if whole else None
    go_names, our_names = names(texts["go"]), names(texts["virtkit"])
    result["go_names_missing_in_virtkit"] = sorted(go_names - our_names)
    result["time_ratio"] = result["virtkit"]["median_ms"] / result["go"]["median_ms"]
    cpu_go = result["go"]["cpu_ms_per_scrape"]
    result["cpu_ratio"] = result["virtkit"]["cpu_ms_per_scrape"] / cpu_go if cpu_go else None
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.running} running + {args.inactive} inactive domains, {args.scrapes} scrapes")
    heads = ("median ms", 10), ("p90 ms", 8), ("CPU ms", 8), ("series", 7), ("libvirt", 7)
    print(f"{'':10} " + " ".join(f"{h:>{w}}" for h, w in heads) + f" {'names':>6}")
    for key in urls:
        r = result[key]
        print(
            f"{key:10} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} {r['cpu_ms_per_scrape']:8.2f} "
            f"{r['series']:7} {r['series_of_libvirt']:7} {r['metric_names']:6}"
        )
    print(
        f"virtkit's own account (medians): collection {result['virtkit']['collect_median_ms']:.2f}"
        f" ms, with the families {result['virtkit']['scrape_median_ms']:.2f} ms"
    )
    print(f"time ratio {result['time_ratio']:.2f}x (goal <= 1.0), CPU ratio "
          f"{result['cpu_ratio'] or 0:.2f}x (goal <= 2.0)")  # fmt: skip
    print("Go names virtkit lacks:", ", ".join(result["go_names_missing_in_virtkit"]) or "none")


if __name__ == "__main__":
    main()
