"""``virtkit vm ...``: the life of a VM (create, read, power, change, delete, clone).

Its other concerns have their own modules: the flags of ``create`` (``vmspec``), disks and
CD-ROMs (``vmdisk``), NICs and addresses (``vmnic``), reaching the guest (``vmssh``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from virtkit.cli import render, vmdisk, vmmigrate, vmnic, vmsnapshot, vmspec, vmssh
from virtkit.cli.state import HostAwareGroup, State, json_option, pass_state
from virtkit.errors import InvalidInput
from virtkit.specs.units import format_duration

if TYPE_CHECKING:
    from virtkit.specs import VMInfo


@click.group(cls=HostAwareGroup)
def vm() -> None:
    """Create, run, change and delete VMs."""


for _command in (
    vmspec.spec_schema, vmdisk.disk, vmdisk.cdrom, vmnic.nic, vmnic.ip, vmssh.console,
    vmssh.wait, vmssh.ssh, vmsnapshot.snapshot, vmmigrate.migrate,
):  # fmt: skip
    vm.add_command(_command)
vmdisk.disk.add_command(vmsnapshot.disk_chain)
vmdisk.disk.add_command(vmsnapshot.disk_flatten)


# -- create ----------------------------------------------------------------------------------


@vm.command()
@vmspec.spec_options
@click.option("--start", is_flag=True, help="Start the VM once created.")
@click.option("--print-xml", is_flag=True, help="Print the domain XML instead of creating.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="With hosts registered: say which host placement chooses and why; create nothing.",
)
@json_option
@pass_state
def create(
    state: State, /, start: bool, print_xml: bool, dry_run: bool, as_json: bool, **flags: Any
) -> None:
    """Create a VM from flags and/or a YAML spec file.

    \b
    Examples:
      virtkit vm create web1 --memory 2G --vcpus 2 --disk 20G --cdrom /iso/debian.iso --start
      virtkit vm create tiny --kernel ./vmlinuz --initrd ./initrd.img --cmdline console=ttyS0
      virtkit vm create -f web1.yaml --start
      virtkit vm create web2 --image debian-12 --network lab --start
    """
    spec = vmspec.spec_from_flags(**flags)
    if not state.one_host and state.client.fleet.hosts():
        _create_placed(state, spec, start=start, print_xml=print_xml, dry_run=dry_run,
                       as_json=as_json)  # fmt: skip
        return
    if dry_run:
        raise click.UsageError("--dry-run explains placement: it needs hosts (virtkit host add)")
    if print_xml:
        click.echo(state.client.vms.preview_xml(spec), nl=False)
        return
    progress = (lambda msg: click.echo(f"... {msg}", err=True)) if sys.stderr.isatty() else None
    info = state.client.vms.create(spec, start=start, progress=progress)
    if as_json:
        render.print_json(info)
        return
    click.echo(
        f"created VM {info.name}: {info.vcpus} vCPU, {render.size(info.max_memory)}, "
        f"{info.domain_type}, {info.machine}; {info.state.value}"
    )


def _create_placed(
    state: State, spec: Any, *, start: bool, print_xml: bool, dry_run: bool, as_json: bool
) -> None:
    """``vm create`` across registered hosts: placement chooses the host (docs/hosts.md)."""
    placement = state.client.fleet.place(spec.memory, spec.vcpus, spec.tags)
    if dry_run or placement.host is None:
        if as_json:
            render.print_json(placement)
        else:
            click.echo(f"placement: {placement.summary}")
            for c in placement.candidates:
                mark = "*" if c.host == placement.host else ("+" if c.eligible else "-")
                click.echo(f"  {mark} {c.host}: {'; '.join(c.reasons)}")
        if placement.host is None:
            raise InvalidInput(f"VM {spec.name} was not created: {placement.summary}",
                               code="no_host_fits")  # fmt: skip
        return
    assert placement.uri is not None
    with state.client.for_uri(placement.uri) as target:
        if print_xml:
            click.echo(target.vms.preview_xml(spec), nl=False)
            return
        progress = (lambda msg: click.echo(f"... {msg}", err=True)) if sys.stderr.isatty() else None
        info = target.vms.create(spec, start=start, progress=progress)
    if as_json:
        render.print_json(info)
        return
    click.echo(
        f"created VM {info.name} on host {placement.host} ({placement.summary.split(': ', 1)[1]})"
        f": {info.vcpus} vCPU, {render.size(info.max_memory)}, {info.domain_type}; "
        f"{info.state.value}"
    )


# -- reading ---------------------------------------------------------------------------------


@vm.command("list")
@json_option
@click.option(
    "--refresh", is_flag=True, help="Read each VM's tags from libvirt, not virtkit's copy."
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=10.0,
    show_default=True,
    help="Across hosts: seconds to wait for them (all asked together).",
)
@pass_state
def list_(state: State, as_json: bool, refresh: bool, timeout: float) -> None:
    """List VMs: name, state, vCPUs, memory, uptime.

    With registered hosts (virtkit host add) and no --host or --connect: every host's VMs in
    one table; a host that does not answer within --timeout is named, and the rest listed."""
    if not state.one_host and state.client.fleet.hosts():
        _list_across_hosts(state, as_json, refresh, timeout)
        return
    vms = state.client.vms.list(refresh=refresh)
    if as_json:
        render.print_json(vms)
        return
    addresses = (
        state.client.nics.addresses() if any(v.state.value == "running" for v in vms) else {}
    )
    render.table(
        ["NAME", "STATE", "VCPUS", "MEMORY", "UPTIME", "IP", "AUTOSTART", "TAGS"],
        [
            [
                v.name,
                v.state.value,
                str(v.vcpus),
                render.size(v.memory),
                format_duration(v.uptime),
                ",".join(a.ip for a in addresses.get(v.name, [])) or "-",
                "yes" if v.autostart else "no",
                ",".join(v.tags),
            ]
            for v in vms
        ],
    )


def _list_across_hosts(state: State, as_json: bool, refresh: bool, timeout: float) -> None:
    listed = state.client.fleet.vms(timeout=timeout, refresh=refresh)
    if as_json:
        render.print_json(listed)
        return
    render.table(
        ["HOST", "NAME", "STATE", "VCPUS", "MEMORY", "UPTIME", "AUTOSTART", "TAGS"],
        [
            [
                h.host,
                v.name,
                v.state.value,
                str(v.vcpus),
                render.size(v.memory),
                format_duration(v.uptime),
                "yes" if v.autostart else "no",
                ",".join(v.tags),
            ]
            for h in listed
            for v in h.vms
        ],
    )
    for h in listed:
        if not h.reachable:
            click.echo(f"host {h.host} ({h.uri}) unreachable: {h.error}", err=True)


def _show(info: VMInfo) -> None:
    render.fields(
        [
            ("Name", info.name),
            ("UUID", info.uuid),
            ("State", info.state.value),
            ("Uptime", format_duration(info.uptime)),
            ("Type", info.domain_type),
            ("Machine", info.machine),
            ("Arch", info.arch),
            ("vCPUs", f"{info.vcpus} (max {info.max_vcpus})"),
            ("Memory", f"{render.size(info.memory)} (max {render.size(info.max_memory)})"),
            ("CPU", info.cpu or "hypervisor default"),
            ("Autostart", "yes" if info.autostart else "no"),
            ("Persistent", "yes" if info.persistent else "no"),
            ("Boot", ", ".join(info.boot) or ("kernel" if info.kernel else "-")),
            ("Kernel", info.kernel),
            ("Initrd", info.initrd),
            ("Cmdline", info.cmdline),
            ("Description", info.description),
            ("Tags", ", ".join(info.tags)),
            ("Owner", info.owner),
            ("Serial console", (info.console_pty or "yes") if info.serial_console else "no"),
            ("KSM", "on" if info.ksm else "off (nosharepages)"),
            ("Guest agent", info.guest_agent or "no channel"),
            ("Console log", info.serial_log),
        ]
    )
    if info.ssh_host_keys:
        from virtkit.cloudinit import key_fingerprint

        click.echo("SSH host keys (made by virtkit; 'vm ssh' accepts only these):")
        for key in info.ssh_host_keys:
            click.echo(f"  {key.split()[0]:20} {key_fingerprint(key)}")
    if info.disks:
        click.echo("Disks:")
        for d in info.disks:
            flags = [f for f, on in (("readonly", d.readonly), ("owned", d.owned)) if on]
            click.echo(
                f"  {d.target:6} {d.device:6} {d.bus or '-':7} {d.format or '-':6} "
                f"{d.source or '-'}{'  (' + ', '.join(flags) + ')' if flags else ''}"
            )
    for g in info.graphics:
        where = f"{g.listen or '*'}:{g.port}" if g.port else f"{g.listen or '*'} (port on start)"
        click.echo(f"Graphics: {g.type} on {where}")


@vm.command()
@click.argument("name")
@json_option
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """Everything useful about one VM."""
    info = state.client.vms.get(name)
    if as_json:
        render.print_json(info)
    else:
        _show(info)


@vm.command()
@click.argument("name")
@click.option("--inactive", is_flag=True, help="The persistent config, not the running one.")
@pass_state
def xml(state: State, name: str, inactive: bool) -> None:
    """Print the VM's libvirt domain XML."""
    click.echo(state.client.vms.xml(name, inactive=inactive), nl=False)


@vm.command("cloud-init")
@click.argument("name")
@json_option
@pass_state
def cloud_init(state: State, name: str, as_json: bool) -> None:
    """What the VM's cloud-init seed carries (user-data, meta-data, network config), with
    password hashes and private keys hidden."""
    seed = state.client.vms.cloud_init(name)
    if as_json:
        render.print_json(seed)
        return
    click.echo(f"Seed: {seed.source} ({seed.format})")
    for f in seed.files:
        click.echo(f"\n--- {f.path}" + (f"  (hidden: {', '.join(f.hidden)})" if f.hidden else ""))
        click.echo(f.text.rstrip("\n"))


@vm.command("console-log")
@click.argument("name")
@click.option("--tail", "tail_bytes", type=int, help="Only the last N bytes (of the log file).")
@click.option(
    "--source",
    type=click.Choice(["auto", "file", "stream"]),
    default="auto",
    show_default=True,
    help="file: the console log (the whole history; on the VM's host only); stream: the live "
    "console through libvirt (what the guest prints from now on; works remotely); auto: the "
    "file where it is on this machine, else the stream.",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing what the VM prints until it stops."
)
@click.option("--timeout", type=float, help="Stop after this many seconds (stream default 10).")
@click.option(
    "--idle", type=float, help="Stop after this many seconds without output (stream default 2)."
)
@pass_state
def console_log(
    state: State,
    name: str,
    tail_bytes: int | None,
    source: str,
    follow: bool,
    timeout: float | None,
    idle: float | None,
) -> None:
    """Print what the VM wrote on its serial console: its console log where the log file is
    on this machine, else (remote hosts) what it prints from now on, read live. Which one is
    shown is said on stderr."""
    output = state.client.consoles.output(
        name,
        source=source,
        tail_bytes=tail_bytes,
        follow=follow,
        timeout=timeout,
        idle=idle,
    )
    click.echo(f"# {output.description}", err=True)
    out = sys.stdout.buffer
    try:
        for chunk in output.chunks:
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        pass


# -- power -----------------------------------------------------------------------------------


@vm.command()
@click.argument("name")
@click.option("--paused", is_flag=True, help="Start with CPUs paused.")
@pass_state
def start(state: State, name: str, paused: bool) -> None:
    """Start a VM."""
    state.client.vms.start(name, paused=paused)
    click.echo(f"started {name}" + (" (paused)" if paused else ""))


@vm.command()
@click.argument("name")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait for the guest to power off (default 60).",
)
@click.option("--force", is_flag=True, help="Power off if the guest has not shut down in time.")
@pass_state
def shutdown(state: State, name: str, timeout: float | None, force: bool) -> None:
    """Shut a VM down gracefully (its guest agent when one answers, else the ACPI power
    button), waiting for it."""
    client = state.client
    wait = client.settings.shutdown_timeout if timeout is None else timeout
    if sys.stderr.isatty():
        click.echo(f"shutting down {name} (waiting up to {wait:.0f} s)...", err=True)
    how = client.vms.shutdown(name, timeout=wait, force=force)
    click.echo(
        {
            "shutdown": f"{name} shut down",
            "forced": f"{name} did not shut down in {wait:.0f} s: powered off",
            "forced-paused": f"{name} was paused (it cannot see the power button): powered off",
        }[how]
    )


@vm.command()
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    required=True,
    help="Required: this cuts the power, as pulling the plug would.",
)
@pass_state
def stop(state: State, name: str, force: bool) -> None:
    """Power a VM off at once (--force; unsaved guest data is lost)."""
    state.client.vms.stop(name)
    click.echo(f"powered off {name}")


def _simple(action: str, method: str, done: str, help_text: str) -> None:
    @vm.command(action, help=help_text)
    @click.argument("name")
    @pass_state
    def command(state: State, name: str) -> None:
        getattr(state.client.vms, method)(name)
        click.echo(f"{done} {name}")


_simple("reboot", "reboot", "rebooting", "Reboot a running VM (guest agent, else ACPI).")
_simple("reset", "reset", "reset", "Hard-reset a VM, like the reset button.")
_simple("pause", "pause", "paused", "Pause a running VM's CPUs.")
_simple("resume", "resume", "resumed", "Resume a paused VM.")


# -- changing --------------------------------------------------------------------------------


@vm.command("set")
@click.argument("name")
@click.option("--vcpus", type=int, help="New number of vCPUs.")
@click.option(
    "--max-vcpus",
    type=int,
    help="New vCPU maximum, from the next start (a running VM takes vCPUs live up to it).",
)
@click.option("--memory", help="New memory, e.g. 1G (bare numbers are MiB).")
@click.option(
    "--ksm",
    type=click.Choice(["on", "off"]),
    help="Let KSM merge this VM's memory, or not (from its next start).",
)
@click.option(
    "--owner",
    help="Give the VM to this API user ('' for nobody): what an operator sees with "
    "api_vm_scope = own.",
)
@json_option
@pass_state
def set_(
    state: State,
    name: str,
    vcpus: int | None,
    max_vcpus: int | None,
    memory: str | None,
    ksm: str | None,
    owner: str | None,
    as_json: bool,
) -> None:
    """Change vCPUs, their maximum and memory (persistently, and live where the running VM
    allows), whether KSM may merge the VM's memory, and its owner."""
    changes = []
    if owner:
        state.client.users.get(owner)  # a user who exists, before anything changes
    others = (vcpus, max_vcpus, memory, ksm, owner)
    if (
        vcpus is not None
        or max_vcpus is not None
        or memory is not None
        or all(o is None for o in others)
    ):
        result = state.client.vms.set(name, vcpus=vcpus, memory=memory, max_vcpus=max_vcpus)
        changes = result.changes
    if ksm is not None:
        changes.append(state.client.ksm.set_vm(name, ksm == "on"))
    if owner is not None:
        state.client.vms.set_owner(name, owner or None)
        changes.append(f"owner {owner or '(nobody)'}")
    if as_json:
        render.print_json({"name": name, "changes": changes})
        return
    for line in changes:
        click.echo(line)


@vm.command()
@click.argument("name")
@click.argument("mode", type=click.Choice(["on", "off"]))
@pass_state
def autostart(state: State, name: str, mode: str) -> None:
    """Start the VM when the host (libvirtd) starts: on or off."""
    state.client.vms.set_autostart(name, mode == "on")
    click.echo(f"autostart {mode} for {name}")


@vm.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Power the VM off first if it runs.")
@click.option(
    "--remove-storage", is_flag=True, help="Also delete the disks virtkit created for this VM."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def delete(
    state: State, name: str, force: bool, remove_storage: bool, yes: bool, as_json: bool
) -> None:
    """Delete a VM (undefine). Its disks stay unless --remove-storage."""
    vms = state.client.vms
    if remove_storage and not yes:
        doomed = vms.storage_to_remove(name)
        if doomed:
            click.echo(
                "This permanently deletes:\n" + "\n".join(f"  {p}" for p in doomed), err=True
            )
            if not sys.stdin.isatty():
                raise InvalidInput(
                    "refusing to delete storage without confirmation: add --yes",
                    code="confirmation_required",
                )
            click.confirm("Delete these files?", abort=True, err=True)
    result = vms.delete(name, force=force, remove_storage=remove_storage)
    if as_json:
        render.print_json(result)
        return
    click.echo(
        f"deleted VM {name}" + (" (it was running: powered off)" if result.was_running else "")
    )
    for path in result.removed:
        click.echo(f"  removed {path}")
    for line in result.kept:
        click.echo(f"  kept    {line}")


@vm.command()
@click.argument("source")
@click.argument("new_name")
@click.option(
    "--linked",
    is_flag=True,
    help="qcow2 overlays on SOURCE's disks instead of copies (SOURCE must then never "
    "change its disks: keep it shut off, as a template).",
)
@json_option
@pass_state
def clone(state: State, source: str, new_name: str, linked: bool, as_json: bool) -> None:
    """Clone a shut-off VM: its disks, with a new UUID and new MAC addresses."""
    info = state.client.vms.clone(source, new_name, linked=linked)
    if as_json:
        render.print_json(info)
        return
    click.echo(
        f"cloned {source} to {new_name} ({'linked' if linked else 'full copy'}): "
        + ", ".join(d.source or "-" for d in info.disks if d.device == "disk")
    )
