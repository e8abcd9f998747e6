"""The metadata copy a VM listing shows: one small call per domain once, then the store, and
afresh where an event (or --refresh) says the copy is old. libvirt's test:// driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtkit import Client, Settings
from virtkit.backend.connection import DomainEvent
from virtkit.backend.faults import FaultyHost
from virtkit.backend.host import LibvirtHost
from virtkit.xml.base import VIRTKIT_NS

NODE = f"""<node>
  <domain type='test'>
    <name>alpha</name><uuid>3d6c0a1e-0d0e-4c1f-9d7e-1a2b3c4d5e01</uuid>
    <memory unit='MiB'>256</memory><vcpu>2</vcpu><os><type>hvm</type></os>
    <metadata><vk:virtkit xmlns:vk='{VIRTKIT_NS}' version='0.1'>
      <vk:tags><vk:tag>web</vk:tag><vk:tag>blue</vk:tag></vk:tags></vk:virtkit></metadata>
  </domain>
  <domain type='test'>
    <name>beta</name><uuid>3d6c0a1e-0d0e-4c1f-9d7e-1a2b3c4d5e02</uuid>
    <memory unit='MiB'>128</memory><os><type>hvm</type></os>
  </domain>
</node>"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return Settings(uri=f"test://{node}", cache_dir=tmp_path / "c", state_dir=tmp_path / "s")


def counted(settings: Settings) -> tuple[Client, list[str]]:
    client = Client(settings=settings)
    faulty = FaultyHost(LibvirtHost(client.connection), {})
    client = Client(settings=settings, host=faulty)
    calls: list[str] = faulty.calls  # type: ignore[attr-defined]
    return client, calls


@pytest.fixture
def first(settings: Settings) -> Iterator[tuple[Client, list[str]]]:
    client, calls = counted(settings)
    yield client, calls
    client.close()


def tags(client: Client, **kw: bool) -> dict[str, list[str]]:
    return {v.name: v.tags for v in client.vms.list(**kw)}


def test_each_domain_is_read_once_then_the_store_answers(
    settings: Settings, first: tuple[Client, list[str]]
) -> None:
    client, calls = first
    assert tags(client) == {"alpha": ["web", "blue"], "beta": []}
    assert calls.count("metadata_xml") == 2
    calls.clear()
    assert tags(client) == {"alpha": ["web", "blue"], "beta": []}
    assert "metadata_xml" not in calls  # memory
    other, other_calls = counted(settings)  # a new process: the store's copy
    assert tags(other) == {"alpha": ["web", "blue"], "beta": []}
    assert "metadata_xml" not in other_calls
    assert tags(other, refresh=True) == {"alpha": ["web", "blue"], "beta": []}
    assert other_calls.count("metadata_xml") == 2
    other.close()


def test_an_event_makes_that_domain_read_again(first: tuple[Client, list[str]]) -> None:
    client, calls = first
    rows = client.vms.list()
    alpha = next(v for v in rows if v.name == "alpha")
    calls.clear()
    client.vms._views.meta._on_event(DomainEvent("alpha", alpha.uuid, "metadata-changed", 0))
    client.vms._views.meta._on_event(DomainEvent("beta", "x", "started", 0))  # not a change
    assert tags(client)["alpha"] == ["web", "blue"]
    assert calls.count("metadata_xml") == 1
