"""The exporter's own text writer against prometheus-client's, on libvirt's test driver: the
same families, help, types, labels and values when both are parsed; every domain shows, an
inactive one as shutoff; an undefined one is gone from the next scrape (no stale series)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from virtkit import Client, DomainEvent, Settings
from virtkit.metrics.collector import HostSample
from virtkit.metrics.prometheus import VirtkitCollector, registry

# alpha runs (a disk, a NIC); gamma is defined but not running (the test driver's runstate 5,
# shutoff); the third one's name needs escaping in a label value.
NODE = """<node>
  <domain type='test'>
    <name>alpha</name>
    <memory unit='MiB'>256</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/images/alpha.qcow2'/><target dev='vda' bus='virtio'/>
      </disk>
      <interface type='bridge'><source bridge='br0'/><target dev='vnet0'/></interface>
    </devices>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>gamma</name>
    <memory unit='MiB'>64</memory>
    <os><type>hvm</type></os>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test'>
    <name>odd"name\\x</name>
    <memory unit='MiB'>32</memory>
    <os><type>hvm</type></os>
  </domain>
</node>"""

TASKS = {"running": 1, "failed": 2}


@pytest.fixture
def vk(tmp_path: Path) -> Iterator[Client]:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    client = Client(
        settings=Settings(
            uri=f"test://{node}", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state"
        )
    )
    yield client
    client.close()


class Frozen:
    """One host's sample, the same on every scrape: two writers see the same figures."""

    def __init__(self, sample: HostSample) -> None:
        self.sample = sample

    def collect(self) -> HostSample:
        return self.sample


def parsed(text: str) -> dict[str, tuple[str, str, list[Sample]]]:
    """Family name -> (type, help, samples), the scrape duration's value left out (it is the
    previous scrape's, so differs between two scrapes by design)."""
    found = {}
    for family in text_string_to_metric_families(text):
        samples = [
            s._replace(value=0.0) if s.name == "virtkit_scrape_duration_seconds" else s
            for s in family.samples
        ]
        found[family.name] = (family.type, family.documentation, samples)
    return found


def series(text: str) -> dict[str, list[dict[str, str]]]:
    return {
        f.name: [dict(s.labels) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def test_render_is_what_prometheus_client_writes(vk: Client) -> None:
    collector = VirtkitCollector([Frozen(vk.metrics.collect())], tasks=lambda: TASKS)
    ours = collector.render().decode()
    theirs = generate_latest(registry(collector)).decode()
    assert parsed(ours) == parsed(theirs)
    families = parsed(ours)
    # the comparison saw what matters: counters, every domain, an escaped label, the tasks
    assert families["libvirt_domain_info_cpu_time_seconds"][0] == "counter"
    assert "# TYPE virtkit_host_cpu_seconds_total counter" in ours
    domains = {s.labels["domain"] for s in families["virtkit_domain_state"][2]}
    assert domains == {"alpha", "gamma", 'odd"name\\x'}
    assert 'domain="odd\\"name\\\\x"' in ours
    tasks = {s.labels["state"]: s.value for s in families["virtkit_tasks"][2]}
    assert tasks == {"queued": 0, "running": 1, "succeeded": 0, "failed": 2}
    # every series of a host carries it
    for name, (_kind, _help, samples) in families.items():
        if not name.startswith(("virtkit_tasks", "virtkit_build", "virtkit_scrape")):
            assert all("host" in s.labels for s in samples), name


def test_inactive_domain_shows_and_an_undefined_one_goes(vk: Client) -> None:
    collector = VirtkitCollector([vk.metrics])
    first = series(collector.render().decode())
    states = {s["domain"]: (s["state"], s["reason"]) for s in first["virtkit_domain_state"]}
    assert states["gamma"][0] == "shutoff" and states["alpha"][0] == "running"
    sizes = {s["domain"] for s in first["virtkit_domain_memory_maximum_bytes"]}
    assert "gamma" in sizes  # an inactive domain's size too
    assert all(s["domain"] != "gamma" for s in first["libvirt_domain_state_code"])
    text = collector.render().decode()  # a scrape with the inactive figures kept
    counts = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "virtkit_host_domains"
        for s in f.samples
    }
    assert counts["running"] == 2 and counts["shutoff"] == 1 and counts["paused"] == 0

    # The collector keeps inactive domains' figures until a lifecycle event says they
    # changed; events arrive on libvirt's event thread, so wait until ours (subscribed after
    # the collector's) has seen the undefine.
    gone = threading.Event()

    def on_event(event: DomainEvent) -> None:
        if event.domain == "gamma" and event.event == "undefined":
            gone.set()

    unsubscribe = vk.subscribe(on_event)
    try:
        vk.vms.delete("gamma")
        assert gone.wait(10)
    finally:
        unsubscribe()
    after = collector.render().decode()
    assert 'domain="gamma"' not in after
    assert {s["domain"] for s in series(after)["virtkit_domain_state"]} == {"alpha", 'odd"name\\x'}
