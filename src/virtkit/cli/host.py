"""``virtkit host ...``: what this host is and can do."""

from __future__ import annotations

import time

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state


@click.group()
def host() -> None:
    """Facts about the libvirt host."""


@host.command()
@json_option
@click.option("--reprobe", is_flag=True, help="Test KVM again instead of using the cached verdict.")
@pass_state
def info(state: State, as_json: bool, reprobe: bool) -> None:
    """Versions, CPU, memory, NUMA, hugepages, KSM, and whether KVM is usable."""
    facts = state.client.hosts.info(refresh_kvm=reprobe)
    if as_json:
        render.print_json(facts)
        return
    kvm = facts.kvm
    checked = time.strftime("%Y-%m-%d %H:%M", time.localtime(kvm.checked_at))
    ksm = facts.ksm
    render.fields(
        [
            ("Host", f"{facts.hostname} ({facts.uri})"),
            ("libvirt", facts.libvirt_version),
            ("Hypervisor", f"{facts.hypervisor} {facts.hypervisor_version}"),
            ("CPU", f"{facts.cpu_vendor or ''} {facts.cpu_model or ''} ({facts.arch})".strip()),
            (
                "CPUs",
                f"{facts.cpus} ({facts.sockets} socket x {facts.cores} cores x "
                f"{facts.threads} threads)",
            ),
            (
                "Memory",
                f"{render.size(facts.memory_total)} total, {render.size(facts.memory_free)} free",
            ),
            (
                "NUMA nodes",
                "; ".join(
                    f"node {n.id}: {render.size(n.memory)}, {n.cpus} CPUs" for n in facts.numa_nodes
                )
                or "-",
            ),
            (
                "Hugepages",
                "; ".join(
                    f"{render.size(h.size)}: {h.total} total, {h.free} free"
                    for h in facts.hugepages
                )
                or "none",
            ),
            (
                "KSM",
                f"{ksm.run or 'unknown'}; {ksm.pages_sharing or 0} pages sharing "
                f"(~{render.size(ksm.saved)} saved), {ksm.full_scans or 0} full scans",
            ),
            (
                "KVM usable",
                f"{'yes' if kvm.usable else 'NO'}: {kvm.reason} "
                f"({'cached, ' if kvm.cached else ''}checked {checked})",
            ),
            *([("KVM fix", kvm.fix)] if kvm.fix and not kvm.usable else []),
            ("New VMs run as", facts.domain_type + ("" if kvm.usable else " (TCG: slow)")),
            ("Machine types", ", ".join(facts.machines)),
            ("Max vCPUs", facts.max_vcpus),
        ]
    )


@host.command("fix-kvm")
@pass_state
def fix_kvm(state: State) -> None:
    """Give /dev/kvm root:kvm 0660 (Debian's udev rule) where no udev manages /dev."""
    result = state.client.hosts.fix_kvm()
    click.echo(result.message)
