"""VM service logic on libvirt's test driver (a fresh per-test node file, no QEMU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtkit import Client, Settings, VMState
from virtkit.errors import InvalidInput, InvalidState, NotFound
from virtkit.xml.domain import Domain, OwnedDisk

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
    </devices>
  </domain>
  <domain type='test'>
    <name>beta</name>
    <memory unit='MiB'>128</memory>
    <os><type>hvm</type></os>
  </domain>
</node>"""


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


def test_list_is_sorted_with_state_and_sizes(vk: Client) -> None:
    vms = vk.vms.list()
    assert [v.name for v in vms] == ["alpha", "beta"]
    assert vms[0].state == VMState.RUNNING and vms[0].vcpus == 2
    assert vms[0].memory == 256 * 1024 * 1024
    assert vms[0].uptime is None  # no QEMU process to measure on the test driver


def test_show_details(vk: Client) -> None:
    info = vk.vms.get("alpha")
    assert info.disks[0].source == "/images/alpha.qcow2" and not info.disks[0].owned
    assert info.persistent and not info.created_by_virtkit


def test_power_cycle_and_state_errors(vk: Client) -> None:
    vms = vk.vms
    with pytest.raises(InvalidState, match="cannot start VM 'alpha': it is running"):
        vms.start("alpha")
    with pytest.raises(InvalidState, match="cannot resume VM 'alpha': it is running"):
        vms.resume("alpha")
    vms.pause("alpha")
    assert vms.state("alpha") == VMState.PAUSED
    with pytest.raises(InvalidState, match="paused and cannot see the power button"):
        vms.shutdown("alpha", timeout=1)
    vms.resume("alpha")
    vms.stop("alpha")
    assert vms.state("alpha") == VMState.SHUTOFF
    with pytest.raises(InvalidState, match="cannot power off VM 'alpha': it is shut off"):
        vms.stop("alpha")
    with pytest.raises(InvalidState, match="cannot shut down VM 'alpha': it is shut off"):
        vms.shutdown("alpha")
    vms.start("alpha")
    assert vms.shutdown("alpha", timeout=5) == "shutdown"


def test_missing_and_invalid_names(vk: Client) -> None:
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        vk.vms.get("ghost")
    with pytest.raises(InvalidInput, match="invalid VM name"):
        vk.vms.start("../alpha")


def test_delete_refuses_running_then_forces(vk: Client) -> None:
    with pytest.raises(InvalidState, match="stop it first"):
        vk.vms.delete("alpha")
    result = vk.vms.delete("alpha", force=True, remove_storage=True)
    assert result.was_running and result.removed == []
    assert result.kept == ["/images/alpha.qcow2 (not created by virtkit for this VM)"]
    with pytest.raises(NotFound):
        vk.vms.get("alpha")


def test_only_owned_disks_are_named_for_removal(vk: Client) -> None:
    guest = vk.host.lookup("alpha")
    dom = Domain.parse(guest.xml(inactive=True))
    owned = OwnedDisk()
    owned.path = "/images/alpha.qcow2"
    dom.ensure_virtkit_metadata().owned_disks.append(owned)
    vk.host.define(dom.to_xml())
    assert vk.vms.storage_to_remove("alpha") == ["/images/alpha.qcow2"]
    assert vk.vms.get("alpha").disks[0].owned


def test_autostart_round_trip(vk: Client) -> None:
    vk.vms.set_autostart("beta", True)
    assert vk.vms.get("beta").autostart
    vk.vms.set_autostart("beta", False)
    assert not vk.vms.get("beta").autostart


def test_set_needs_something(vk: Client) -> None:
    with pytest.raises(InvalidInput, match="nothing to change") as info:
        vk.vms.set("beta")
    assert info.value.code == "nothing_to_set"


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"vcpus": 0}, "invalid_vcpus", "vcpus: vCPUs must be at least 1"),
        ({"memory": 1024}, "invalid_memory", "memory: memory must be at least 16 MiB"),
        ({"memory": "12 parsecs"}, "invalid_memory", "memory: unknown size unit"),
    ],
)
def test_set_checks_through_the_spec_and_changes_nothing(
    vk: Client, kwargs: dict[str, object], code: str, field: str
) -> None:
    before = vk.vms.xml("beta", inactive=True)
    with pytest.raises(InvalidInput) as info:
        vk.vms.set("beta", **{"vcpus": 2, **kwargs})  # type: ignore[arg-type]
    assert info.value.code == code and field in info.value.message
    assert vk.vms.xml("beta", inactive=True) == before


def test_set_memory_as_bytes_or_text(vk: Client) -> None:
    def configured() -> int | None:
        return Domain.parse(vk.vms.xml("beta", inactive=True)).current_memory_kib

    vk.vms.set("beta", memory=96 * 1024 * 1024)
    assert configured() == 96 * 1024
    vk.vms.set("beta", memory="112")  # text as in a spec: a bare number is MiB
    assert configured() == 112 * 1024


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, "invalid_spec"),
        ({"size": 1024}, "invalid_size"),
        ({"size": "1G", "bus": "sata"}, "invalid_bus"),
    ],
)
def test_disk_attach_checks_through_the_spec(
    vk: Client, kwargs: dict[str, object], code: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        vk.disks.attach("beta", **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code and info.value.message.startswith("invalid disk attach: ")


def test_shutdown_force_on_paused_powers_off_at_once(vk: Client) -> None:
    vk.vms.pause("alpha")
    assert vk.vms.shutdown("alpha", timeout=60, force=True) == "forced-paused"
    assert vk.vms.state("alpha") == VMState.SHUTOFF


def test_delete_running_transient_vm(vk: Client) -> None:
    dom = Domain.parse(vk.host.lookup("beta").xml(inactive=True))
    dom.name = "transient"
    dom.uuid = None
    vk.host.create_transient(dom.to_xml())
    assert not vk.vms.get("transient").persistent
    result = vk.vms.delete("transient", force=True)
    assert result.was_running
    with pytest.raises(NotFound):
        vk.vms.get("transient")


def _vcpus(vk: Client, name: str) -> tuple[int | None, int | None]:
    config = Domain.parse(vk.vms.xml(name, inactive=True))
    return config.vcpu_current, config.vcpu


def test_set_vcpus_over_a_running_vms_maximum_names_the_way(vk: Client) -> None:
    before = vk.vms.xml("alpha", inactive=True)
    with pytest.raises(InvalidState) as refused:
        vk.vms.set("alpha", vcpus=3, memory="200")  # running with 2 of at most 2
    assert refused.value.code == "vcpus_over_maximum"
    assert "runs with its maximum of 2 vCPUs" in refused.value.message
    assert "virtkit vm set alpha --max-vcpus 3 --vcpus 3" in refused.value.message
    assert vk.vms.xml("alpha", inactive=True) == before  # memory unchanged too
    changes = vk.vms.set("alpha", vcpus=3, max_vcpus=4).changes
    assert changes == [
        "vCPU maximum: 4 from the next start",
        "vCPUs: 3 from the next start (the running VM was started with at most 2)",
    ]
    assert _vcpus(vk, "alpha") == (3, 4)
    assert vk.vms.get("alpha").vcpus == 2  # the running VM keeps its 2


def test_set_max_vcpus_on_a_shut_off_vm(vk: Client) -> None:
    vk.vms.stop("beta")
    assert vk.vms.set("beta", max_vcpus=4).changes == ["vCPU maximum: 4 from the next start"]
    assert _vcpus(vk, "beta") == (1, 4)
    assert vk.vms.set("beta", vcpus=3).changes == ["vCPUs: 3 from the next start"]
    assert _vcpus(vk, "beta") == (3, 4)
    assert vk.vms.set("beta", max_vcpus=2).changes == [
        "vCPU maximum: 2 from the next start",
        "vCPUs: 2 from the next start (lowered to the new maximum)",
    ]
    assert _vcpus(vk, "beta")[1] == 2
    assert vk.vms.set("beta", vcpus=6).changes == [  # shut off: the maximum follows
        "vCPU maximum: 6 from the next start",
        "vCPUs: 6 from the next start",
    ]
    with pytest.raises(InvalidInput) as info:
        vk.vms.set("beta", vcpus=3, max_vcpus=2)
    assert info.value.code == "invalid_vcpus" and "more than the maximum of 2" in str(info.value)
