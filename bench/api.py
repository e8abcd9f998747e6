#!/usr/bin/env python3
"""The REST API's speed (issue 13).

A private libvirtd (tests/testbed/libvirtd.py) gets N inactive domains with virtkit's metadata
(as bench/list.py makes them), and a ``virtkit serve`` runs against it with an admin token.

* ``GET /api/v1/vms`` for each N (200 and 1,000 by default): the server's own time (its
  ``Server-Timing`` header: request arrival to response start, JSON included) and the client's,
  medians of ``--runs``; against the library's warm ``Client.vms.list()`` in this process.
  Goal: server time <= library + 3 ms.
* ``--clients`` (50) concurrent clients for ``--duration`` (60) seconds, reading
  (``/vms``, ``/vms/{name}``, ``/tasks``, ``/host/ksm``... mixed) on the smallest N: errors,
  requests per second, p50/p99. Goal: no error, p99 < 100 ms.

Needs root. ``.venv/bin/python bench/api.py [--domains 200 1000] [--duration 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.apiserver import free_port  # noqa: E402
from tests.testbed.libvirtd import PrivateLibvirtd  # noqa: E402

import virtkit  # noqa: E402

_spec = importlib.util.spec_from_file_location("vkbench_list", ROOT / "bench" / "list.py")
assert _spec is not None and _spec.loader is not None
bench_list = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_list)

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
PREFIX = "vkbench-api-"
GOAL_OVER_LIBRARY_MS = 3.0
GOAL_P99_MS = 100.0


def server_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]  # app;dur=1.23
    return float(timing.split("dur=")[1])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class Service:
    def __init__(self, uri: str, state: Path) -> None:
        self.env = {
            **os.environ,
            "VIRTKIT_URI": uri,
            "VIRTKIT_STATE_DIR": str(state),
            "VIRTKIT_CACHE_DIR": str(state / "cache"),
            "VIRTKIT_CONFIG": "/nonexistent",
        }
        run = [VIRTKIT, "user", "add", "bench", "--role", "admin", "--password-stdin"]
        subprocess.run(run, env=self.env, input="bench-password-1", text=True, check=True,
                       capture_output=True)  # fmt: skip
        made = subprocess.run([VIRTKIT, "user", "token", "create", "bench"], env=self.env,
                              text=True, check=True, capture_output=True)  # fmt: skip
        self.token = made.stdout.strip().splitlines()[-1]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(state / "serve.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen([VIRTKIT, "serve", "--port", str(self.port)], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("virtkit serve did not start")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.close()


def list_speed(service: Service, settings: virtkit.Settings, runs: int) -> dict[str, float]:
    """The library's list and the service's, taken in turns (one each per round), so that what
    drifts on the machine (libvirtd's own speed, the host's other work) touches both alike."""
    library, server, total = [], [], []
    with (
        virtkit.Client(settings=settings) as client,
        httpx.Client(base_url=service.url, headers=service.headers, timeout=30) as http,
    ):
        client.vms.list()
        http.get("/api/v1/vms").raise_for_status()  # warm: the service's first list
        for _ in range(runs):
            start = time.perf_counter()
            client.vms.list()
            library.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            response = http.get("/api/v1/vms")
            total.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
            server.append(server_ms(response))
    result = {
        "library_ms": statistics.median(library),
        "server_ms": statistics.median(server),
        "client_ms": statistics.median(total),
    }
    result["server_over_library_ms"] = result["server_ms"] - result["library_ms"]
    result["goal_met"] = float(result["server_over_library_ms"] <= GOAL_OVER_LIBRARY_MS)
    return result


async def load(
    service: Service, names: list[str], clients: int, duration: float, interval: float
) -> dict[str, Any]:
    paths = ["/api/v1/vms", "/api/v1/tasks", "/api/v1/host/ksm", "/api/v1/pools", "/api/v1/whoami"]
    paths += [f"/api/v1/vms/{name}" for name in names[:20]]
    latencies: list[float] = []
    errors: list[str] = []
    # Clients are made and connected before the clock starts: an httpx client costs tens of
    # milliseconds of this process's CPU to build (its TLS context), and 50 of them built at
    # once would be measured as the service's latency.
    limits = httpx.Limits(max_connections=1)
    https = [
        httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=30, limits=limits)
        for _ in range(clients)
    ]
    await asyncio.gather(*(http.get("/api/v1/whoami") for http in https))
    stop_at = time.monotonic() + duration

    async def one(index: int) -> None:
        http = https[index]
        i = index
        # Independent clients, not a drill: each starts at its own point of the period, so
        # the load is an even 1/interval requests per second per client.
        await asyncio.sleep(index * interval / clients)
        try:
            while time.monotonic() < stop_at:
                path = paths[i % len(paths)]
                i += 1
                start = time.perf_counter()
                try:
                    response = await http.get(path)
                except httpx.HTTPError as exc:
                    errors.append(f"{path}: {exc!r}")
                    continue
                latencies.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    errors.append(f"{path}: {response.status_code}")
                if interval:  # each client as a dashboard or a script: one request a period
                    await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
        finally:
            await http.aclose()

    began = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    took = time.monotonic() - began
    return {
        "clients": clients,
        "interval": interval,
        "seconds": took,
        "requests": len(latencies),
        "per_second": len(latencies) / took,
        "errors": len(errors),
        "first_errors": errors[:5],
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "goal_met": not errors and percentile(latencies, 99) < GOAL_P99_MS,
    }


def measure(
    count: int, runs: int, clients: int, duration: float, interval: float
) -> dict[str, Any]:
    with PrivateLibvirtd(name="vkbench-api") as daemon:
        conn = libvirt.open(daemon.uri)
        names = [f"{PREFIX}{i:05d}" for i in range(count)]
        for i, name in enumerate(names):
            conn.defineXML(bench_list.domain_xml(name, i))
        state = Path(tempfile.mkdtemp(prefix=PREFIX))
        settings = virtkit.Settings(uri=daemon.uri, cache_dir=state / "cache", state_dir=state)
        service = Service(daemon.uri, state)
        try:
            result: dict[str, Any] = {"domains": count, **list_speed(service, settings, runs)}
            if clients and duration:
                result["load"] = asyncio.run(load(service, names, clients, duration, interval))
                if interval:
                    result["load_closed"] = asyncio.run(load(service, names, clients, 10.0, 0.0))
        finally:
            service.stop()
            for dom in conn.listAllDomains(0):
                dom.undefine()
            conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        help="seconds between one client's requests (0: back to back); a 10 s back-to-back "
        "run follows for the throughput",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for i, count in enumerate(args.domains):
        duration = args.duration if i == 0 else 0.0  # the load test once, on the first N
        results.append(measure(count, args.runs, args.clients, duration, args.interval))
    for r in results:
        verdict = "met" if r["goal_met"] else "MISSED"
        print(
            f"{r['domains']:>5} VMs: library {r['library_ms']:.1f} ms, server "
            f"{r['server_ms']:.1f} ms (+{r['server_over_library_ms']:.1f}; goal <= +"
            f"{GOAL_OVER_LIBRARY_MS:g}: {verdict}), client {r['client_ms']:.1f} ms"
        )
        for key in ("load", "load_closed"):
            if key not in r:
                continue
            ld = r[key]
            if ld["interval"]:
                verdict = f"goal < {GOAL_P99_MS:g}: " + ("met" if ld["goal_met"] else "MISSED")
            else:  # saturation: a throughput figure; its latency is the length of the queue
                verdict = "saturated: a throughput figure, no latency goal"
            pace = f"every {ld['interval']:g} s" if ld["interval"] else "back to back"
            print(
                f"      {ld['clients']} clients ({pace}) x {ld['seconds']:.0f} s: "
                f"{ld['requests']} requests ({ld['per_second']:.0f}/s), {ld['errors']} errors, "
                f"p50 {ld['p50_ms']:.1f} ms, p99 {ld['p99_ms']:.1f} ms "
                f"({verdict})"
            )
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
