"""``virtkit host ...``: what this host is and can do."""

from __future__ import annotations

import time
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state


@click.group()
def host() -> None:
    """This host's facts; the hosts virtkit manages (add, list, show, remove, maintenance)."""


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


# -- several hosts ---------------------------------------------------------------------------

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the hosts (all looked at together).",
)


def _since(when: float | None) -> str:
    from virtkit.specs.units import format_duration

    return "-" if when is None else f"{format_duration(time.time() - when)}"


def _state(status: Any) -> str:
    h = status.host
    if status.reachable:
        text = f"up {_since(h.state_since)}"
    else:
        text = f"DOWN {_since(h.state_since)}" if h.state_since else "DOWN"
    return text + (" maintenance" if h.maintenance else "")


def _kvm(status: Any) -> str:
    if status.kvm is None:
        return "-" if not status.reachable else "unknown"
    return "yes" if status.kvm.usable else "NO"


@host.command("add")
@click.argument("name")
@click.argument("uri")
@click.option("--tag", "tags", multiple=True, help="A tag for placement rules (repeat).")
@click.option("--no-check", is_flag=True, help="Add it without connecting first.")
@click.option(
    "--migration-uri",
    help="How the other hosts' libvirtd reach this one for migrations (default: URI).",
)
@click.option(
    "--no-probe", is_flag=True, help="Do not decide the KVM verdict now (a test boot there)."
)
@timeout_option
@json_option
@pass_state
def add(
    state: State,
    name: str,
    uri: str,
    tags: tuple[str, ...],
    no_check: bool,
    migration_uri: str | None,
    no_probe: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Manage another host: NAME for it, URI how to reach its libvirtd.

    \b
    URI: qemu+ssh://root@kvm1/system (SSH keys), qemu+tls://kvm1/system (TLS
    certificates), qemu+tcp://kvm1/system, or qemu:///system (this machine).
    It must answer first (unless --no-check); its KVM verdict is decided once now.
    """
    status = state.client.fleet.add(
        name, uri, tags=tags, check=not no_check, probe=not no_probe,
        timeout=max(timeout, 60.0) if not no_probe else timeout, migration_uri=migration_uri,
    )  # fmt: skip
    if as_json:
        render.print_json(status)
        return
    if not status.reachable:
        click.echo(f"added host {name} ({uri}), not checked")
        return
    click.echo(
        f"added host {name} ({uri}): {status.hostname}, libvirt {status.libvirt_version}, "
        f"QEMU {status.hypervisor_version}, KVM {_kvm(status)}"
    )
    if status.kvm is not None and not status.kvm.usable:
        click.echo(f"  KVM: {status.kvm.reason}")
        if status.kvm.fix:
            click.echo(f"  fix: {status.kvm.fix}")


@host.command("list")
@timeout_option
@json_option
@pass_state
def list_(state: State, timeout: float, as_json: bool) -> None:
    """The registered hosts now: reachable since when, versions, CPU, free memory, VMs, KSM
    savings and KVM (looked at together, each within --timeout)."""
    statuses = state.client.fleet.status(timeout=timeout)
    if as_json:
        render.print_json(statuses)
        return
    if not statuses:
        click.echo("no hosts: add one with `virtkit host add NAME URI`")
        return
    render.table(
        ["NAME", "STATE", "LIBVIRT", "QEMU", "CPU", "MEM FREE", "VMS", "KSM SAVED", "KVM", "URI"],
        [
            [
                s.host.name,
                _state(s),
                s.libvirt_version or "-",
                s.hypervisor_version or "-",
                s.cpu_model or "-",
                render.size(s.memory_free),
                "-" if s.vms_running is None else f"{s.vms_running}/{s.vms_total}",
                render.size(s.ksm_saved),
                _kvm(s),
                s.host.uri,
            ]
            for s in statuses
        ],
    )
    for s in statuses:
        if not s.reachable:
            click.echo(f"{s.host.name}: {s.error}", err=True)


@host.command("show")
@click.argument("name")
@timeout_option
@json_option
@pass_state
def show(state: State, name: str, timeout: float, as_json: bool) -> None:
    """One registered host: the registry's record and what it is now (its KVM verdict is
    decided if not known yet)."""
    (status,) = state.client.fleet.status([name], timeout=max(timeout, 60.0), probe=True)
    if as_json:
        render.print_json(status)
        return
    h = status.host
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.last_seen)) if h.last_seen else "-"
    kvm = status.kvm
    render.fields(
        [
            ("Host", h.name),
            ("URI", h.uri),
            ("State", _state(status)),
            ("Error", status.error),
            ("Last answer", seen),
            ("Host UUID", h.host_uuid),
            ("Hostname", status.hostname),
            ("libvirt", status.libvirt_version),
            ("QEMU", status.hypervisor_version),
            ("CPU", f"{status.cpu_model or '-'} ({status.cpus or '-'} CPUs)"),
            (
                "Memory",
                f"{render.size(status.memory_free)} free of {render.size(status.memory_total)}",
            ),
            (
                "VMs",
                "-"
                if status.vms_total is None
                else f"{status.vms_running} running ({status.vcpus_running} vCPUs) of "
                f"{status.vms_total}",
            ),
            ("KSM saves", render.size(status.ksm_saved)),
            (
                "KVM usable",
                "-" if kvm is None else f"{'yes' if kvm.usable else 'NO'}: {kvm.reason}",
            ),
            *([("KVM fix", kvm.fix)] if kvm and kvm.fix and not kvm.usable else []),
            ("Tags", ", ".join(h.tags)),
            (
                "Maintenance",
                (
                    f"on since {_since(h.maintenance_since)}"
                    + (f": {h.maintenance_reason}" if h.maintenance_reason else "")
                )
                if h.maintenance
                else "off",
            ),
        ]
    )


@host.command("remove")
@click.argument("name")
@pass_state
def remove(state: State, name: str) -> None:
    """Stop managing a host. Nothing on it changes: its VMs, disks and networks stay."""
    gone = state.client.fleet.remove(name)
    click.echo(f"removed host {gone.name} ({gone.uri}) from virtkit; nothing on it changed")


@host.command("maintenance")
@click.argument("name")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("--reason", help="Why (shown in host show and host list --json).")
@pass_state
def maintenance(state: State, name: str, mode: str, reason: str | None) -> None:
    """Maintenance on: nothing is placed on the host; off: it takes VMs again."""
    h = state.client.fleet.set_maintenance(name, mode == "on", reason)
    click.echo(f"host {h.name}: maintenance {'on' if h.maintenance else 'off'}")


@host.command("tag")
@click.argument("name")
@click.argument("tags", nargs=-1)
@pass_state
def tag(state: State, name: str, tags: tuple[str, ...]) -> None:
    """Set a host's placement tags (none: clear them)."""
    h = state.client.fleet.set_tags(name, tags)
    click.echo(f"host {h.name}: tags {', '.join(h.tags) or 'none'}")


@host.command("evacuate")
@click.argument("name")
@click.option("--parallel", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Migrations at once.")  # fmt: skip
@click.option("--copy-storage", is_flag=True, help="Copy disks other hosts do not share.")
@click.option("--auto", is_flag=True, help="Let each live migration choose how to converge.")
@click.option(
    "--unsafe", is_flag=True, help="Migrate though libvirt cannot tell the storage is shared."
)
@click.option("--dry-run", is_flag=True, help="Say where each VM would go; move nothing.")
@timeout_option
@json_option
@pass_state
def evacuate(state: State, name: str, parallel: int, copy_storage: bool, auto: bool,
             unsafe: bool, dry_run: bool, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Maintenance on, then move every VM off the host (running ones live, the others
    offline), each placed as a new VM would be. A VM that cannot move is reported; the
    others still go. Exit 1 if one could not."""
    from virtkit.specs import MigrateOptions

    opts = MigrateOptions(copy_storage=copy_storage, auto=auto, unsafe=unsafe)

    def said(item: Any) -> None:
        if not as_json and not dry_run:
            mark = "moved" if item.ok else "NOT moved"
            click.echo(f"{item.vm}: {mark} -> {item.target or '-'}: {item.detail}", err=True)

    report = state.client.fleet.evacuate(
        name, opts, parallel=parallel, dry_run=dry_run, timeout=timeout, report=said
    )
    if as_json:
        render.print_json(report)
    else:
        for item in report.items:
            click.echo(f"{item.vm}: {'ok' if item.ok else 'FAILED'} -> {item.target or '-'}: "
                       f"{item.detail}")  # fmt: skip
        click.echo(f"host {name}: {report.moved} moved, {report.failed} not")
    if report.failed:
        raise SystemExit(1)
