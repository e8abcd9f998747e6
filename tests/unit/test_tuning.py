"""The tuning advisor against captured real topologies (tests/data/topologies, see its README):
pins never split SMT siblings between guests, stay node-local, never overlap latency VMs; the
emulator stays off latency cores; hugepages where reserved or reservable; refusals are clear."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from virtkit.errors import InvalidInput, Unsupported
from virtkit.tuning.hostplan import host_knobs, revert_command, thp_mode, write_knob
from virtkit.tuning.plan import (
    OtherVm,
    Plan,
    Profile,
    VmFacts,
    check_profile,
    make_plan,
    other_vm,
    vm_facts,
)
from virtkit.tuning.rewrite import rewrite, unified_diff
from virtkit.tuning.service import _host_lock
from virtkit.tuning.topology import (
    Topology,
    format_cpuset,
    parse_cpuset,
    topology_from_capabilities,
)
from virtkit.xml.domain import Domain

DATA = Path(__file__).resolve().parents[1] / "data" / "topologies"
GIB = 1024 * 1024  # KiB
QEMU = (7, 2, 0)

# (a) 1 socket, no SMT; (b) 1 socket with SMT; (c) 2 NUMA nodes with SMT; (d) 4 NUMA nodes;
# (e) 1 GiB hugepages (offered and reservable on the AMD host; reserved on the 4-node capture)
NO_SMT = "this-host-2cpu"
SMT = "amd-16c32t-1node"
SMT_SMALL = "intel-4c8t-caches"
TWO_NODES = "amd-epyc-2node-smt"
FOUR_NODES = "libvirt-4node-basic"


def load(name: str) -> Topology:
    sysfs = DATA / name / "sysfs"
    return topology_from_capabilities(
        (DATA / name / "capabilities.xml").read_text(), sysfs if sysfs.is_dir() else None
    )


def vm(name: str = "vm", vcpus: int = 2, mem_gib: float = 1, **kw: object) -> VmFacts:
    return VmFacts(name, str(kw.pop("domain_type", "kvm")), vcpus, int(mem_gib * GIB), None, **kw)  # type: ignore[arg-type]


TINY = """<domain type='{type}'>
  <name>{name}</name>
  <memory unit='KiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <unknown-thing keep='yes'><inner/></unknown-thing>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/x.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source dev='/dev/sdz'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/old.img'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/var/lib/seed.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:00:00:01'/>
      <source network='default'/>
      <model type='e1000'/>
    </interface>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def domain(name: str = "vm", vcpus: int = 2, mem_kib: int = GIB, type: str = "kvm") -> Domain:
    return Domain.parse(TINY.format(name=name, vcpus=vcpus, mem=mem_kib, type=type))


def pinned(plan: Plan) -> set[int]:
    return set().union(*plan.vcpu_pins.values())


def cores_of(topology: Topology, cpus: set[int]) -> set[int]:
    return set().union(*(topology.core_of(c) for c in cpus)) if cpus else set()


def tuned_other(topology: Topology, facts: VmFacts, profile: Profile) -> tuple[Plan, OtherVm]:
    """Plan a VM, write its definition, and read its hold back as the next plan will."""
    plan = make_plan(topology, facts, [], profile, qemu_version=QEMU)
    new = rewrite(domain(facts.name, facts.vcpus, facts.memory_kib), plan)
    return plan, other_vm(new)


# -- the captures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "nodes", "cpus", "threads"),
    [(NO_SMT, 1, 2, 1), (SMT, 1, 32, 2), (SMT_SMALL, 1, 8, 2), (TWO_NODES, 2, 64, 2),
     (FOUR_NODES, 4, 16, 1)],
)  # fmt: skip
def test_each_capture_reads_as_its_host(name: str, nodes: int, cpus: int, threads: int) -> None:
    topology = load(name)
    assert len(topology.nodes) == nodes
    assert len(topology.cpus) == cpus
    assert topology.threads_per_core == threads
    assert sum(len(core) for core in topology.cores()) == cpus  # every CPU in exactly one core
    assert topology.complete


def test_sysfs_adds_caches_and_free_hugepages() -> None:
    here = load(NO_SMT)
    assert here.l3_kib({0}) == 32 * 1024
    assert {c.level for c in here.caches} == {1, 2, 3}
    pool = here.node(0).pool(1048576)
    assert pool is not None and pool.total == 0 and pool.free == 0
    assert load(SMT_SMALL).l3_kib({2}) == 8192
    amd = load(SMT)  # capabilities only: the L3 of each CCD, from libvirt's cache banks
    assert amd.l3_kib({0}) == 32 * 1024 and amd.page_sizes_kib == (2048, 1048576)


def test_cpu_lists_parse_and_format() -> None:
    assert parse_cpuset("0-3,8,^2") == {0, 1, 3, 8}
    assert format_cpuset({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    with pytest.raises(InvalidInput) as err:
        parse_cpuset("3-1")
    assert err.value.code == "invalid_cpuset"
    with pytest.raises(InvalidInput) as bad:
        check_profile("fast")
    assert bad.value.code == "tune_unknown_profile" and "latency" in bad.value.message


def test_capabilities_without_cells_are_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        topology_from_capabilities("<capabilities><host/></capabilities>")
    assert err.value.code == "tune_no_topology"
    with pytest.raises(InvalidInput) as err:
        topology_from_capabilities("<capabilities>")
    assert err.value.code == "invalid_capabilities"


# -- pinning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [SMT, SMT_SMALL, TWO_NODES, FOUR_NODES, NO_SMT])
@pytest.mark.parametrize("vcpus", [1, 3])
def test_latency_pins_whole_cores_on_one_node(name: str, vcpus: int) -> None:
    topology = load(name)
    facts = vm(vcpus=vcpus, mem_gib=0.5)
    if vcpus > len(topology.cpus) - 1:
        with pytest.raises(Unsupported) as err:
            make_plan(topology, facts, [], "latency", qemu_version=QEMU)
        assert err.value.code == "tune_no_free_cores"
        return
    plan = make_plan(topology, facts, [], "latency", qemu_version=QEMU)
    cpus = pinned(plan)
    assert all(len(pin) == 1 for pin in plan.vcpu_pins.values())  # 1:1
    assert len(cpus) == vcpus  # no two vCPUs on one thread
    assert {topology.node_of(c) for c in cpus} == {plan.node}  # node-local
    assert plan.numa_mode == "strict" and plan.numa_nodes == {plan.node}
    # the emulator (and I/O thread) never touch the cores of the vCPUs, siblings included
    assert plan.emulator and not (plan.emulator & cores_of(topology, cpus))
    assert plan.iothread == plan.emulator
    # vCPUs fill a core's threads before the next core: no more cores than needed
    assert len({topology.core_of(c) for c in cpus}) == -(-vcpus // topology.threads_per_core)


@pytest.mark.parametrize("name", [SMT, SMT_SMALL, TWO_NODES, FOUR_NODES])
def test_latency_vms_never_share_a_core_or_sibling(name: str) -> None:
    topology = load(name)
    others: list[OtherVm] = []
    held: list[set[int]] = []
    for index in range(3):
        facts = vm(f"lat{index}", vcpus=1, mem_gib=0.25)
        plan = make_plan(topology, facts, others, "latency", qemu_version=QEMU)
        new = rewrite(domain(facts.name, 1, facts.memory_kib), plan)
        others.append(other_vm(new))  # read back from the XML, as the service does
        cores = cores_of(topology, pinned(plan))
        for before in held:
            assert not (cores & before), "a core (or its SMT sibling) went to two latency VMs"
        assert plan.emulator is not None
        for before in [*held, cores]:
            assert not (plan.emulator & before), "emulator threads on a latency core"
        held.append(cores)
    assert all(o.exclusive for o in others)
    if topology.smt:  # the idle sibling of a 1-vCPU latency VM is said
        assert any("stay idle" in w for w in plan.warnings)


def test_throughput_and_density_keep_off_latency_cores() -> None:
    topology = load(TWO_NODES)
    lat_plan, lat = tuned_other(topology, vm("lat", vcpus=4, mem_gib=0.5), "latency")
    lat_cores = cores_of(topology, pinned(lat_plan))
    thr = make_plan(topology, vm("thr", vcpus=4, mem_gib=0.5), [lat], "throughput")
    assert not (cores_of(topology, pinned(thr)) & lat_cores)
    assert all(len(p) == 1 for p in thr.vcpu_pins.values())
    dens = make_plan(topology, vm("dens", vcpus=4, mem_gib=0.5), [lat], "density")
    assert not (pinned(dens) & lat_cores)
    assert all(len(p) > 1 for p in dens.vcpu_pins.values())  # floating over the node
    assert dens.numa_mode == "preferred"
    # a throughput VM's cores are not exclusive: a density VM may float over them
    _thr_plan, thr_hold = tuned_other(topology, vm("thr", vcpus=4, mem_gib=0.5), "throughput")
    assert not thr_hold.exclusive
    dens2 = make_plan(topology, vm("d2", vcpus=2, mem_gib=0.5), [thr_hold], "density")
    assert pinned(dens2) & thr_hold.cpus
    # but a latency VM never takes a core another VM is pinned to
    lat2 = make_plan(topology, vm("lat2", vcpus=2, mem_gib=0.5), [thr_hold], "latency")
    assert not (cores_of(topology, pinned(lat2)) & cores_of(topology, set(thr_hold.cpus)))


def test_unpinned_vms_are_named_as_a_risk_to_latency() -> None:
    topology = load(SMT)
    loose = other_vm(domain("loose"))
    assert loose.floating and not loose.cpus
    plan = make_plan(topology, vm(vcpus=2), [loose], "latency")
    assert any("loose" in w and "not pinned" in w for w in plan.warnings)


def test_refused_when_no_whole_core_is_left() -> None:
    topology = load(NO_SMT)  # 2 cores: core 0 stays the host's, core 1 is the only one to give
    first_plan, first = tuned_other(topology, vm("first", vcpus=1, mem_gib=0.125), "latency")
    assert pinned(first_plan) == {1} and first_plan.emulator == {0}
    with pytest.raises(Unsupported) as err:
        make_plan(topology, vm("second", vcpus=1, mem_gib=0.125), [first], "latency")
    assert err.value.code == "tune_no_free_cores" and err.value.expected
    assert "second" in err.value.message
    # throughput falls back to floating over what no latency VM holds, and says so
    plan = make_plan(topology, vm("second", vcpus=1, mem_gib=0.125), [first], "throughput")
    assert pinned(plan) == {0}
    assert any("float" in w for w in plan.warnings)
    # the SMT host: 3 cores to give (one is housekeeping); 2 vCPUs each take a whole core
    small = load(SMT_SMALL)
    others: list[OtherVm] = []
    for index in range(3):
        facts = vm(f"l{index}", vcpus=2, mem_gib=0.125)
        plan = make_plan(small, facts, others, "latency")
        others.append(other_vm(rewrite(domain(facts.name, 2, facts.memory_kib), plan)))
    with pytest.raises(Unsupported) as err:
        make_plan(small, vm("l3", vcpus=1, mem_gib=0.125), others, "latency")
    assert err.value.code == "tune_no_free_cores"


def test_vm_larger_than_every_node() -> None:
    topology = load(TWO_NODES)  # nodes of 1 and 2 GiB in this capture
    with pytest.raises(Unsupported) as err:
        make_plan(topology, vm(vcpus=2, mem_gib=3), [], "latency")
    assert err.value.code == "tune_vm_larger_than_node"
    plan = make_plan(topology, vm(vcpus=2, mem_gib=3), [], "throughput")
    assert plan.numa_mode == "interleave" and any("span" in w for w in plan.warnings)
    # one that fits goes to the node with room (node 1: 2 GiB)
    fits = make_plan(topology, vm(vcpus=2, mem_gib=1.5), [], "latency")
    assert fits.node == 1 and {topology.node_of(c) for c in pinned(fits)} == {1}


def test_four_nodes_fill_node_by_node() -> None:
    topology = load(FOUR_NODES)
    others: list[OtherVm] = []
    nodes = []
    for index in range(4):
        facts = vm(f"v{index}", vcpus=3, mem_gib=1)
        plan = make_plan(topology, facts, others, "latency")
        nodes.append(plan.node)
        assert {topology.node_of(c) for c in pinned(plan)} == {plan.node}
        others.append(other_vm(rewrite(domain(facts.name, 3, facts.memory_kib), plan)))
    assert sorted(nodes) == [0, 1, 2, 3]  # each node has 3 cores to give: one VM each


# -- memory, CPU, devices ---------------------------------------------------------------------


def test_1g_hugepages_reservable_on_the_amd_host() -> None:
    plan = make_plan(load(SMT), vm(vcpus=2, mem_gib=4), [], "latency")
    choice = plan.hugepages
    assert choice is not None and choice.size_kib == GIB and not choice.reserved
    assert choice.pages == 4
    assert choice.command == (
        "echo 4 > /sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages"
    )
    change = next(c for c in plan.changes if c.area == "hugepages")
    assert change.when == "manual" and choice.command in change.summary
    new = rewrite(domain(mem_kib=4 * GIB), plan)
    assert new.memory_backing is not None and not new.memory_backing.hugepages  # not yet


def test_1g_hugepages_reserved_are_used() -> None:
    topology = load(FOUR_NODES)  # libvirt's capture reports 1 GiB pools on every node
    plan = make_plan(topology, vm(vcpus=2, mem_gib=1), [], "latency")
    assert plan.hugepages is not None and plan.hugepages.reserved
    assert plan.hugepages.size_kib == GIB and plan.hugepages.node == plan.node
    new = rewrite(domain(mem_kib=GIB), plan)
    backing = new.memory_backing
    assert backing is not None and backing.hugepages and backing.nosharepages
    assert not backing.locked  # advice only: libvirt needs CAP_SYS_RESOURCE for it
    assert any("<locked/>" in c.summary and c.when == "manual" for c in plan.changes)
    assert [p.size_kib for p in backing.pages] == [GIB]
    # memory that is no multiple of 1 GiB takes 2 MiB pages
    half = make_plan(topology, vm(vcpus=2, mem_gib=1.5), [], "latency")
    assert half.hugepages is not None and half.hugepages.size_kib == 2048
    # density never uses hugepages
    assert make_plan(topology, vm(vcpus=2, mem_gib=1), [], "density").hugepages is None


def test_free_pages_from_sysfs_count() -> None:
    topology = load(NO_SMT)  # pools exist, none reserved: 128 MiB becomes "reserve 64 x 2 MiB"
    plan = make_plan(topology, vm(vcpus=1, mem_gib=0.125), [], "latency")
    assert plan.hugepages is not None and not plan.hugepages.reserved
    assert plan.hugepages.size_kib == 2048 and plan.hugepages.pages == 64


def test_cpu_mode_by_profile_and_tcg() -> None:
    topology = load(SMT)
    assert make_plan(topology, vm(), [], "latency").cpu_mode == "host-passthrough"
    assert make_plan(topology, vm(), [], "density").cpu_mode == "host-model"
    tcg = make_plan(topology, vm(domain_type="qemu"), [], "latency")
    assert tcg.cpu_mode is None and not [c for c in tcg.changes if c.area == "cpu"]
    assert any("TCG" in w for w in tcg.warnings)


def test_disks_nics_and_balloon() -> None:
    dom = domain(vcpus=12)
    facts = vm_facts(dom, direct_io={"vda": True})
    plan = make_plan(load(SMT), facts, [], "latency", qemu_version=QEMU)
    assert plan.disk_driver["vda"] == {
        "cache": "none", "io": "io_uring", "discard": "unmap", "queues": 8, "iothread": 1
    }  # fmt: skip
    assert plan.disk_driver["vdb"]["cache"] == "none" and plan.disk_driver["vdb"]["io"] == "native"
    assert "hdc" not in plan.disk_driver  # the CD-ROM stays as it is
    sata = next(c for c in plan.changes if c.area == "disk sda" and c.when == "manual")
    assert "virtio" in sata.summary
    assert plan.nic_driver["52:54:00:00:00:01"] == {"model": "virtio", "queues": 8}
    assert plan.balloon == "none"
    old_qemu = make_plan(load(SMT), facts, [], "latency", qemu_version=(4, 2, 0))
    assert old_qemu.disk_driver["vda"]["io"] == "native"
    no_direct = make_plan(load(SMT), vm_facts(dom, direct_io={"vda": False}), [], "latency")
    assert "cache" not in no_direct.disk_driver["vda"]
    assert any("O_DIRECT" in w for w in no_direct.warnings)
    density = make_plan(load(SMT), facts, [], "density")
    assert density.balloon == "virtio-stats" and density.nosharepages is None


def test_every_change_has_a_reason_and_a_time() -> None:
    plan = make_plan(load(TWO_NODES), vm_facts(domain(vcpus=4, mem_kib=GIB)), [], "latency")
    areas = {c.area for c in plan.changes}
    assert {"vcpupin", "emulatorpin", "iothreads", "numatune", "memoryBacking"} <= areas
    for change in plan.changes:
        assert len(change.reason) > 20 and "\n" not in change.reason and change.when
    inactive = [c for c in plan.changes if c.area in ("vcpupin", "emulatorpin")]
    assert all(c.when == "next_boot" for c in inactive)
    running = make_plan(
        load(TWO_NODES), vm_facts(domain(vcpus=4, mem_kib=GIB), running=True), [], "latency"
    )
    assert {c.when for c in running.changes if c.area in ("vcpupin", "emulatorpin")} == {"live"}


def test_rewrite_carries_the_plan_and_keeps_unknown_elements() -> None:
    topology = load(TWO_NODES)
    before = domain(vcpus=4, mem_kib=GIB)
    facts = vm_facts(before, direct_io={"vda": True})
    plan = make_plan(topology, facts, [], "latency", qemu_version=QEMU)
    after = Domain.parse(rewrite(before, plan).to_xml())
    assert after.node.find("unknown-thing/inner") is not None
    tune = after.cputune
    assert tune is not None
    assert tune.vcpu_cpusets() == {v: format_cpuset(c) for v, c in plan.vcpu_pins.items()}
    assert tune.emulatorpin == format_cpuset(plan.emulator or ())
    assert [p.iothread for p in tune.iothreadpins] == [1] and after.iothreads == 1
    assert after.numatune is not None and after.numatune.memory_mode == "strict"
    assert after.numatune.memory_nodeset == str(plan.node)
    assert after.virtkit is not None and after.virtkit.tuning is not None
    assert after.virtkit.tuning.profile == "latency"
    assert after.memballoon is not None and after.memballoon.model == "none"
    vda = next(d for d in after.disks if d.target_dev == "vda")
    assert (vda.driver_cache, vda.driver_io, vda.driver_iothread) == ("none", "io_uring", 1)
    diff = unified_diff(before, after, "vm")
    assert "+    <vcpupin" in diff and "+    <emulatorpin" in diff and diff.startswith("---")
    # planning again on the tuned definition changes nothing: the plan is stable
    again = make_plan(
        topology, vm_facts(after, direct_io={"vda": True}), [], "latency", qemu_version=QEMU
    )
    assert [c for c in again.changes if c.when != "manual"] == []
    assert unified_diff(after, rewrite(after, again), "vm") == ""


def test_density_after_latency_removes_what_latency_added() -> None:
    topology = load(SMT)
    lat = rewrite(domain(), make_plan(topology, vm_facts(domain()), [], "latency"))
    assert lat.memory_backing is not None
    lat.memory_backing.locked = True  # as an administrator following the advice
    dens_plan = make_plan(topology, vm_facts(lat), [], "density")
    dens = rewrite(lat, dens_plan)
    assert dens.memory_backing is None or not (
        dens.memory_backing.nosharepages or dens.memory_backing.locked
    )
    assert dens.memballoon is not None and dens.memballoon.model == "virtio"
    assert dens.memballoon.stats_period == 10
    assert dens.cpu is not None and dens.cpu.mode == "host-model"


# -- the host side ------------------------------------------------------------------------------


def _host_tree(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    shutil.copytree(DATA / NO_SMT / "sysfs", root)
    (root / "kernel/mm/transparent_hugepage/enabled").write_text("[always] madvise never\n")
    for cpu in (0, 1):
        freq = root / f"devices/system/cpu/cpu{cpu}/cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text("powersave\n")
        (freq / "scaling_available_governors").write_text("performance powersave\n")
    return root


def test_host_plan_and_apply_with_reverts(tmp_path: Path) -> None:
    root = _host_tree(tmp_path)
    huge = vm("huge", vcpus=1, mem_gib=0.5, hugepage_kib=2048)
    shared = vm("shared", vcpus=1, mem_gib=0.5)
    knobs, _notes = host_knobs(root, load(NO_SMT), [(huge, frozenset({0})), (shared, None)])
    by_name = {k.name: k for k in knobs}
    assert by_name["hugepages 2048 KiB on node 0"].wanted == "256"
    assert by_name["transparent hugepages"].current == "always"
    assert by_name["transparent hugepages"].wanted == "madvise"
    assert by_name["KSM"].current == "0" and by_name["KSM"].wanted == "1"
    assert by_name["governor cpu0"].wanted == "performance"
    for knob in knobs:
        assert knob.reason
        # a sysfs copy accepts any write, so every read-back matches
        assert write_knob(root, knob) is None
    assert thp_mode((root / "kernel/mm/transparent_hugepage/enabled").read_text()) == "madvise"
    assert (root / "kernel/mm/ksm/run").read_text().strip() == "1"
    # each revert command names the old value and the file
    revert = revert_command(root, by_name["KSM"])
    assert revert == f"echo 0 > {root}/kernel/mm/ksm/run"
    # applied: a second plan has nothing left to do but the notes
    again, _ = host_knobs(root, load(NO_SMT), [(huge, frozenset({0})), (shared, None)])
    assert again == []


def test_host_plan_without_cpufreq_says_so(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    shutil.copytree(DATA / NO_SMT / "sysfs", root)
    knobs, notes = host_knobs(root, load(NO_SMT), [])
    assert any("cpufreq" in n for n in notes) and any(
        "no defined VM uses hugepages" in n for n in notes
    )
    assert knobs == []  # THP already madvise, KSM off with nothing to share: nothing to do


def test_a_refused_write_is_reported(tmp_path: Path) -> None:
    root = _host_tree(tmp_path)
    knobs, _ = host_knobs(root, None, [])
    thp = next(k for k in knobs if k.name == "transparent hugepages")
    target = root / thp.path
    target.unlink()
    target.mkdir()  # writing a directory fails like a read-only sysfs file
    assert "cannot write" in (write_knob(root, thp) or "")


def test_typed_tuning_elements_read_and_write_libvirt_xml() -> None:
    text = """<domain type='kvm'><name>x</name>
  <cputune>
    <vcpupin vcpu='0' cpuset='1,17'/>
    <emulatorpin cpuset='0'/>
    <iothreadpin iothread='1' cpuset='0'/>
    <shares>2048</shares>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='1'/><memnode cellid='0' mode='strict' nodeset='1'/>
  </numatune>
  <memoryBacking><hugepages><page size='2' unit='M'/></hugepages><locked/></memoryBacking>
  <iothreads>1</iothreads>
  <devices><disk type='file'><driver name='qemu' io='io_uring' queues='4' iothread='1'/></disk>
  <interface type='network'><driver name='vhost' queues='2'/></interface></devices>
</domain>"""
    dom = Domain.parse(text)
    assert dom.cputune is not None and dom.cputune.vcpu_cpusets() == {0: "1,17"}
    assert dom.cputune.emulatorpin == "0" and dom.iothreads == 1
    assert dom.numatune is not None and dom.numatune.memory_nodeset == "1"
    backing = dom.memory_backing
    assert backing is not None and backing.locked and not backing.nosharepages
    assert [p.size_kib for p in backing.pages] == [2048]
    disk = dom.disks[0]
    assert (disk.driver_io, disk.driver_queues, disk.driver_iothread) == ("io_uring", 4, 1)
    assert dom.interfaces[0].driver_queues == 2 and dom.interfaces[0].driver_name == "vhost"
    dom.cputune.emulatorpin = "2-3"
    again = Domain.parse(dom.to_xml())
    # what the classes do not declare survives: <shares>, <memnode>
    assert again.node.find("cputune/shares") is not None
    assert again.node.find("numatune/memnode") is not None
    assert again.cputune is not None and again.cputune.emulatorpin == "2-3"


def test_offline_vcpus_are_pinned_with_the_emulator_and_hold_no_core() -> None:
    topology = load(SMT)
    dom = domain(vcpus=4)
    dom.vcpu_current = 2  # 2 online, room for 4
    plan = make_plan(topology, vm_facts(dom), [], "latency")
    assert plan.online_vcpus == 2 and sorted(plan.vcpu_pins) == [0, 1, 2, 3]
    assert all(len(plan.vcpu_pins[v]) == 1 for v in (0, 1))
    assert plan.vcpu_pins[2] == plan.vcpu_pins[3] == plan.emulator
    assert any("hot-plug" in w for w in plan.warnings)
    hold = other_vm(rewrite(dom, plan))
    assert hold.cpus == plan.vcpu_pins[0] | plan.vcpu_pins[1]  # the offline pins hold nothing


def test_spanning_vm_interleaves_over_enough_nodes_for_its_memory() -> None:
    topology = load(FOUR_NODES)  # nodes of 1, 2, 3 and 4 GiB
    plan = make_plan(topology, vm(vcpus=2, mem_gib=6), [], "throughput")
    assert plan.numa_mode == "interleave"
    total = sum(topology.node(n).memory_kib for n in plan.numa_nodes)
    assert total >= 6 * GIB
    assert {topology.node_of(c) for c in pinned(plan)} <= plan.numa_nodes


def test_one_tune_apply_at_a_time_per_host(tmp_path: Path) -> None:
    entered = threading.Event()

    def second() -> None:
        with _host_lock(tmp_path, "qemu:///system"):
            entered.set()

    with _host_lock(tmp_path, "qemu:///system"):
        worker = threading.Thread(target=second)
        worker.start()
        assert not entered.wait(0.3)  # blocked while the first holds the host's lock
        with _host_lock(tmp_path, "qemu+ssh://other/system"):  # another host: not blocked
            pass
    assert entered.wait(5)
    worker.join(5)


def test_service_on_libvirts_test_driver_and_its_refusals() -> None:
    from virtkit.client import Client

    with Client("test:///default") as client:
        report = client.tuning.check("test", "throughput")  # the driver's running "test" VM
        assert report.running and report.diff.startswith("---")
        assert {c.area for c in report.changes} >= {"vcpupin", "emulatorpin", "numatune"}
        assert {c.when for c in report.changes if c.area == "vcpupin"} == {"live"}
        with pytest.raises(InvalidInput) as err:
            client.tuning.check("test", "fast")
        assert err.value.code == "tune_unknown_profile"
        with pytest.raises(Unsupported) as refused:
            client.tuning.check("test", "latency")  # 8 GiB: larger than each 4 GiB cell
        assert refused.value.code == "tune_vm_larger_than_node"
    remote = Client("qemu+ssh://elsewhere.invalid/system").tuning
    with pytest.raises(Unsupported) as not_local:
        remote.host_check()
    assert not_local.value.code == "tune_host_not_local"
