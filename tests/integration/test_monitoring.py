"""The monitoring kit for real: ``virtkit exporter`` on the private test libvirtd, scraped by a
real Prometheus (its own process, on loopback, every second) that evaluates the shipped alert
rules. Figures agree with libvirt's own, an inactive VM shows as shut off, a paused VM fires
VirtkitVMPaused, every PromQL expression of the shipped dashboard returns data (and every
rule's parses), promtool accepts the rules and a scrape, and a scrape while libvirtd is down
still answers, with ``libvirt_up 0`` and the host's own figures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import libvirt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import VIRTKIT, Bed, tiny_spec
from tests.integration.apiserver import SRC, free_port
from virtkit import Client
from virtkit.backend.guest import reason_of
from virtkit.errors import NotFound
from virtkit.specs import VMSpec

pytestmark = pytest.mark.integration

MONITORING = Path(__file__).resolve().parents[2] / "contrib" / "monitoring"
RULES = MONITORING / "virtkit-alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Grafana's variables, as it would fill them in: every host, a window several scrapes long
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "30s", "$host": ".*"}

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail saying ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


@dataclass
class Monitoring:
    bed: Bed
    client: Client
    exporter: str  # the exporter's base URL
    prometheus: str  # Prometheus's base URL
    running: str  # a VM that runs (a disk, a NIC on a bridge of its own)
    idle: str  # a VM defined, never started
    bridge: str
    log_dir: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; fails on a parse or evaluation error."""
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        found = self.query(expr)
        return float(found[0]["value"][1]) if found else None

    def value_over(self, expr: str, floor: float) -> float | None:
        """The query's (first) value if above ``floor``, else None."""
        value = self.value(expr)
        return value if value is not None and value > floor else None

    def scrape(self) -> httpx.Response:
        return httpx.get(f"{self.exporter}/metrics", timeout=30)

    def alerts(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=10).json()
        return list(body["data"]["alerts"])

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )


def _start(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this module started, by its own handle."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def rules_for_tests(target: Path) -> Path:
    """The shipped rules with every ``for:`` set to 0s: the exprs are the shipped ones, only
    the waiting before an alert fires is dropped (a test cannot wait 30 minutes)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    target.write_text(yaml.safe_dump(rules, sort_keys=False))
    return target


@pytest.fixture(scope="module")
def mon(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    work = tmp_path_factory.mktemp("vkprom")
    tag = secrets.token_hex(3)
    running, idle, bridge = f"vkprom-run-{tag}", f"vkprom-off-{tag}", f"vkprom-{tag}"
    port, prom_port = free_port(), free_port()
    client = bed.client()
    m = Monitoring(bed, client, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{prom_port}",
                   running, idle, bridge, work)  # fmt: skip
    with contextlib.ExitStack() as undo:
        undo.callback(client.close)
        # Prometheus first: it applies its targets some seconds after it starts, meanwhile
        # the VMs are made and the exporter starts.
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(rules_for_tests(work / "rules.yml"))],
            "scrape_configs": [{"job_name": "virtkit-exporter",
                                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
        }  # fmt: skip
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = _start(
            [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
             "--log.level=warn"],
            work / "prometheus.log",
        )  # fmt: skip
        undo.callback(_stop, prometheus)

        # A bridge of its own for the NIC (interface statistics): no address, no forwarding,
        # no firewall rule; the guest's tap joins it and nothing else does.
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        undo.callback(subprocess.run, ["ip", "link", "del", bridge], check=False)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        for name in (running, idle):
            undo.callback(_delete_vm, client, name)
        spec = tiny_spec(bed, running, disks=[{"size": "64M"}], nics=[{"bridge": bridge}])
        client.vms.create(VMSpec(**spec), start=True)
        client.vms.create(VMSpec(**tiny_spec(bed, idle)), start=False)

        # this checkout's source first, as the API tests run `virtkit serve`
        path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
        exporter = _start(
            [VIRTKIT, "-v", "exporter", "--listen", f"127.0.0.1:{port}"],
            work / "exporter.log",
            {**bed.env(), "PYTHONPATH": path},
        )
        undo.callback(_stop, exporter)
        try:
            wait_for("the exporter answers", lambda: _answers(f"{m.exporter}/metrics"))
            wait_for("Prometheus is ready", lambda: _answers(f"{m.prometheus}/-/ready"))
            # two scrapes of the running VM: enough for a rate over the dashboard's window
            wait_for(
                "two samples of the running VM",
                lambda: m.query(
                    f"count_over_time(libvirt_domain_info_cpu_time_seconds_total"
                    f'{{domain="{running}"}}[30s]) >= 2'
                ),
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{m.logs()}") from None
        yield m


def _delete_vm(client: Client, name: str) -> None:
    with contextlib.suppress(NotFound):
        client.vms.delete(name, force=True, remove_storage=True)


def _libvirt(bed: Bed) -> libvirt.virConnect:
    return libvirt.open(bed.uri)


def test_figures_are_libvirts_and_cpu_time_rises(mon: Monitoring) -> None:
    series = f'{{domain="{mon.running}"}}'
    conn = _libvirt(mon.bed)
    try:
        dom = conn.lookupByName(mon.running)
        disk = re.search(r"<source file='([^']+)'", dom.XMLDesc())
        before = dom.info()[4] / 1e9  # libvirt's own CPU time, seconds
        # a sample Prometheus took after libvirt's figure above, and libvirt's after it
        cpu = f"libvirt_domain_info_cpu_time_seconds_total{series}"
        seen = wait_for("a CPU time sample after libvirt's", lambda: mon.value_over(cpu, before))
        after = dom.info()[4] / 1e9
        assert before < seen <= after
        state, max_kib, _mem, vcpus, _cpu = dom.info()
        assert mon.value(f"libvirt_domain_info_maximum_memory_bytes{series}") == max_kib * 1024
        assert mon.value(f"libvirt_domain_info_virtual_cpus{series}") == vcpus
        assert mon.value(f"libvirt_domain_state_code{series}") == state
        assert mon.value(f"virtkit_domain_memory_maximum_bytes{series}") == max_kib * 1024
        disks = mon.query(f"libvirt_domain_block_stats_read_bytes_total{series}")
        assert disk is not None
        assert [(d["metric"]["target_device"], d["metric"]["source_file"]) for d in disks] == [
            ("vda", disk.group(1))
        ]
        nics = mon.query(f"libvirt_domain_interface_stats_receive_bytes_total{series}")
        assert [n["metric"]["source_bridge"] for n in nics] == [mon.bridge]
    finally:
        conn.close()
    # the guest's CPU time goes on rising, as Prometheus sees it
    rise = f"increase(libvirt_domain_info_cpu_time_seconds_total{series}[5s])"
    wait_for("CPU time rising", lambda: mon.value_over(rise, 0))


def test_inactive_vm_shows_as_shutoff(mon: Monitoring) -> None:
    conn = _libvirt(mon.bed)
    try:
        dom = conn.lookupByName(mon.idle)
        code, reason = dom.state()
        max_bytes = dom.maxMemory() * 1024
    finally:
        conn.close()
    assert code == libvirt.VIR_DOMAIN_SHUTOFF
    found = mon.query(f'virtkit_domain_state{{domain="{mon.idle}"}}')
    assert len(found) == 1, found
    labels, value = found[0]["metric"], float(found[0]["value"][1])
    assert (labels["state"], labels["reason"], value) == ("shutoff", reason_of(code, reason), 1)
    assert mon.value(f'virtkit_domain_memory_maximum_bytes{{domain="{mon.idle}"}}') == max_bytes
    # the Go exporter's series are for running domains only
    assert mon.query(f'libvirt_domain_state_code{{domain="{mon.idle}"}}') == []
    shutoff = mon.value(f'virtkit_host_domains{{host="{labels["host"]}", state="shutoff"}}')
    assert shutoff is not None and shutoff >= 1


def test_paused_vm_fires_its_alert(mon: Monitoring) -> None:
    def paused_alerts() -> list[dict[str, Any]]:
        return [
            a for a in mon.alerts()
            if a["labels"]["alertname"].startswith("VirtkitVMPaused")
            and a["labels"].get("domain") == mon.running
        ]  # fmt: skip

    mon.client.vms.pause(mon.running)
    try:
        firing = wait_for(
            "VirtkitVMPaused firing",
            lambda: [a for a in paused_alerts() if a["state"] == "firing"],
        )
        assert [a["labels"]["alertname"] for a in firing] == ["VirtkitVMPaused"]
        alert = firing[0]
        assert alert["labels"]["reason"] == "user" and alert["labels"]["severity"] == "info"
        assert mon.running in alert["annotations"]["summary"]
        assert alert["labels"]["host"] in alert["annotations"]["summary"]
    finally:
        mon.client.vms.resume(mon.running)
    wait_for("the alert resolved", lambda: not paused_alerts())


def _dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARS.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"a variable left in {panel['title']}: {expr}"
            found.append((panel["title"], expr))
    return found


def test_dashboard_and_rules_query(mon: Monitoring) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["host"]["definition"] == "label_values(libvirt_up, host)"
    assert 36 <= dashboard["schemaVersion"] <= 39
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == source, panel["title"]
            assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]
    hosts = httpx.get(
        f"{mon.prometheus}/api/v1/label/host/values", params={"match[]": "libvirt_up"}
    ).json()["data"]
    assert hosts, "the host variable would be empty"
    targets = _dashboard_targets()
    assert len(targets) >= 20
    empty = [(title, expr) for title, expr in targets if not mon.query(expr)]
    assert not empty, f"panels without data: {empty}"
    rules = yaml.safe_load(RULES.read_text())
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            mon.query(rule["expr"])  # parses and evaluates
            names.add(rule["alert"])
    assert names == {
        "VirtkitVMCrashed", "VirtkitVMPausedIOError", "VirtkitVMPaused", "VirtkitLibvirtDown",
        "VirtkitHostMemoryPressure", "VirtkitKSMThrashing", "VirtkitTasksFailing",
        "VirtkitExporterDown",
    }  # fmt: skip
    # Prometheus loaded them all, and none fires on this healthy bed
    loaded = httpx.get(f"{mon.prometheus}/api/v1/rules").json()["data"]["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} == names
    assert all(r["health"] == "ok" for g in loaded for r in g["rules"]), loaded
    firing = [a["labels"] for a in mon.alerts() if a["state"] == "firing"
              and a["labels"].get("domain", mon.running) == mon.running]  # fmt: skip
    assert firing == [], firing


def test_promtool_accepts_rules_and_a_scrape(mon: Monitoring) -> None:
    rules = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    scrape = mon.scrape()
    assert scrape.status_code == 200
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape.text,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr
    )


def test_scrape_while_libvirtd_is_down(mon: Monitoring) -> None:
    daemon = mon.bed.daemon
    daemon.kill()  # guests keep running; restarted below whatever happens
    try:
        down = mon.scrape()
        assert down.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(down.text)}
        assert [s.value for s in families["libvirt_up"].samples] == [0]
        assert families["virtkit_host_memory_total_bytes"].samples[0].value > 0
        assert "virtkit_domain_state" not in families
        # and Prometheus, scraping meanwhile, says so
        wait_for(
            "VirtkitLibvirtDown firing",
            lambda: [a for a in mon.alerts() if a["labels"]["alertname"] == "VirtkitLibvirtDown"
                     and a["state"] == "firing"],
        )  # fmt: skip
    finally:
        if daemon.proc is None:
            daemon.start()

    def up_again() -> str | None:
        text = mon.scrape().text
        return text if re.search(r"^libvirt_up\{[^}]*\} 1$", text, re.M) else None

    text = wait_for("libvirt_up 1 again", up_again)
    assert f'domain="{mon.running}",state="running"' in text  # the guest ran on
