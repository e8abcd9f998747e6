"""``virtkit vm ...``: the life of a VM."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.main import State
from virtkit.errors import InvalidInput
from virtkit.specs import VMInfo, VMSpec, parse_vm_spec

pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Output JSON.")


@click.group()
def vm() -> None:
    """Create, run, change and delete VMs."""


# -- create ----------------------------------------------------------------------------------


def _load_spec_file(path: str) -> dict[str, Any]:
    from virtkit.cloudinit import load_yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read spec file {path}: {exc.strerror}", code="invalid_spec"
        ) from None
    data = load_yaml(text, f"spec file {path}", "invalid_spec")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(
            f"spec file {path} must be a mapping of keys, not {type(data).__name__}",
            code="invalid_spec",
        )
    return _resolve_spec_paths(data, Path(path).resolve().parent)


def _absolute(value: object, base: Path) -> object:
    if isinstance(value, str) and value and not value.startswith("/"):
        return str((base / Path(value).expanduser()).resolve())
    return value


def _resolve_spec_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths in a spec file are relative to the file, as in docker-compose."""
    for key in ("kernel", "initrd", "cdrom"):
        if key in data:
            data[key] = _absolute(data[key], base)
    disks = data.get("disks")
    if isinstance(disks, list):
        for disk in disks:
            if isinstance(disk, dict) and "path" in disk:
                disk["path"] = _absolute(disk["path"], base)
    return data


def _parse_disk(value: str) -> dict[str, Any]:
    """``10G`` (new disk), ``/path/img.qcow2`` or ``./img.qcow2`` (existing), ``key=value,...``."""
    if "=" not in value:
        if "/" in value or value.startswith((".", "~")):
            return {"path": _absolute(value, Path.cwd())}
        return {"size": value}
    disk: dict[str, Any] = {}
    for part in value.split(","):
        key, sep, item = part.partition("=")
        if not sep:
            raise InvalidInput(
                f"--disk {value!r}: expected key=value pairs separated by commas",
                code="invalid_spec",
            )
        disk[key.strip()] = item.strip()
    if "path" in disk:
        disk["path"] = _absolute(disk["path"], Path.cwd())
    return disk


@vm.command()
@click.argument("name", required=False)
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(dir_okay=False),
    help="A YAML spec (see 'virtkit vm spec-schema'); flags override its keys.",
)
@click.option("--vcpus", type=int, help="Virtual CPUs (default 1).")
@click.option("--memory", help="Memory, e.g. 512M, 2G (default 512M; bare numbers are MiB).")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    help="A disk: 10G (new qcow2), /path/to/image, or size=10G,bus=virtio. Repeatable.",
)
@click.option(
    "--cdrom", type=click.Path(resolve_path=True), help="An ISO image to boot from / attach."
)
@click.option(
    "--kernel",
    type=click.Path(resolve_path=True),
    help="Direct kernel boot: kernel image on the host.",
)
@click.option(
    "--initrd", type=click.Path(resolve_path=True), help="Direct kernel boot: initrd on the host."
)
@click.option("--cmdline", help="Direct kernel boot: kernel command line.")
@click.option("--boot", help="Boot order, e.g. cdrom,hd.")
@click.option("--graphics", type=click.Choice(["none", "vnc", "spice"]), help="Display.")
@click.option("--machine", help="Machine type (default q35).")
@click.option("--cpu", help="CPU mode (host-passthrough, host-model, maximum) or model.")
@click.option("--image", help="Boot disk: a clone of this template (NAME or POOL/NAME).")
@click.option("--full", is_flag=True, help="With --image: a full copy, not a linked clone.")
@click.option("--description", help="Free text shown by 'vm show'.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--network", "networks", multiple=True, help="A NIC on this network (repeatable).")
@click.option("--bridge", "bridges", multiple=True, help="A NIC on this host bridge (repeatable).")
@click.option(
    "--ssh-forward", type=int,
    help="A user-mode NIC (no host network touched); this port on 127.0.0.1 reaches its SSH.",
)  # fmt: skip
@click.option("--user", "ci_user", help="cloud-init: a user to create, with sudo.")
@click.option("--ssh-key", "ssh_keys", multiple=True, type=click.Path(),
              help="cloud-init: an SSH public key file for the user (repeatable).")  # fmt: skip
@click.option(
    "--password",
    help="cloud-init: the user's password (stored hashed; visible to local users in the process "
    "list while the command runs: prefer --password-file).",
)
@click.option("--password-file", type=click.Path(),
              help="cloud-init: read the user's password from this file ('-': stdin).")  # fmt: skip
@click.option("--hostname", help="cloud-init: host name (default: the VM's name).")
@click.option("--packages", multiple=True, help="cloud-init: packages to install (a,b or repeat).")
@click.option("--run", "runcmd", multiple=True, help="cloud-init: a command at first boot.")
@click.option("--user-data", type=click.Path(), help="cloud-init: your user-data, merged.")
@click.option("--network-config", type=click.Path(), help="cloud-init: network-config v1/v2.")
@click.option("--ip", help="cloud-init: static address with prefix, e.g. 198.18.0.10/24.")
@click.option("--gateway", help="cloud-init: default gateway (with --ip).")
@click.option("--dns", multiple=True, help="cloud-init: DNS server (with --ip; repeatable).")
@click.option("--seed", type=click.Choice(["nocloud", "configdrive"]),
              help="cloud-init seed format (default nocloud).")  # fmt: skip
@click.option("--no-host-keys", is_flag=True,
              help="cloud-init: let the guest make its SSH host keys (default: virtkit makes "
                   "them; 'vm ssh' accepts only those; cloudbase-init needs this).")  # fmt: skip
@click.option("--no-serial", is_flag=True, help="No serial console.")
@click.option("--no-guest-agent", is_flag=True, help="No channel for the QEMU guest agent.")
@click.option("--autostart", is_flag=True, default=None, help="Start with the host.")
@click.option("--start", is_flag=True, help="Start the VM once created.")
@click.option("--print-xml", is_flag=True, help="Print the domain XML instead of creating.")
@json_option
@pass_state
def create(
    state: State,
    name: str | None,
    spec_file: str | None,
    vcpus: int | None,
    memory: str | None,
    disks: tuple[str, ...],
    cdrom: str | None,
    kernel: str | None,
    initrd: str | None,
    cmdline: str | None,
    boot: str | None,
    graphics: str | None,
    machine: str | None,
    cpu: str | None,
    image: str | None,
    full: bool,
    description: str | None,
    tags: tuple[str, ...],
    networks: tuple[str, ...],
    bridges: tuple[str, ...],
    ssh_forward: int | None,
    ci_user: str | None,
    ssh_keys: tuple[str, ...],
    password: str | None,
    password_file: str | None,
    hostname: str | None,
    packages: tuple[str, ...],
    runcmd: tuple[str, ...],
    user_data: str | None,
    network_config: str | None,
    ip: str | None,
    gateway: str | None,
    dns: tuple[str, ...],
    seed: str | None,
    no_host_keys: bool,
    no_serial: bool,
    no_guest_agent: bool,
    autostart: bool | None,
    start: bool,
    print_xml: bool,
    as_json: bool,
) -> None:
    """Create a VM from flags and/or a YAML spec file.

    \b
    Examples:
      virtkit vm create web1 --memory 2G --vcpus 2 --disk 20G --cdrom /iso/debian.iso --start
      virtkit vm create tiny --kernel ./vmlinuz --initrd ./initrd.img --cmdline console=ttyS0
      virtkit vm create -f web1.yaml --start
      virtkit vm create web2 --image debian-12 --network lab --start
    """
    data = _load_spec_file(spec_file) if spec_file else {}
    source = f"spec file {spec_file}" if spec_file else "VM spec"
    overrides: dict[str, Any] = {
        "name": name,
        "vcpus": vcpus,
        "memory": memory,
        "cdrom": cdrom,
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": cmdline,
        "graphics": graphics,
        "machine": machine,
        "cpu": cpu,
        "description": description,
        "autostart": autostart,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    if disks:
        data["disks"] = [_parse_disk(d) for d in disks]
    if image:
        data["disks"] = [{"image": image, "linked": not full}, *data.get("disks", [])]
    if tags:
        data["tags"] = list(tags)
    if networks or bridges or ssh_forward:
        data["nics"] = [{"network": n} for n in networks] + [{"bridge": b} for b in bridges]
        if ssh_forward:
            data["nics"].append({"user": True, "ssh_forward": ssh_forward})
    if password_file is not None:
        if password is not None:
            raise InvalidInput("give --password or --password-file, not both", code="invalid_spec")
        text = (
            sys.stdin.read() if password_file == "-" else _read_text(password_file, "password file")
        )
        password = text.rstrip("\n")
    ci = _cloud_init_flags(
        ci_user, ssh_keys, password, hostname, packages, runcmd, user_data, network_config, ip,
        gateway, dns, seed,
    )  # fmt: skip
    if no_host_keys and (ci or data.get("cloud_init")):  # alone it asks for no seed
        ci["host_keys"] = False
    if ci:
        data["cloud_init"] = {**(data.get("cloud_init") or {}), **ci}
    if boot:
        data["boot"] = [b.strip() for b in boot.split(",")]
    if no_serial:
        data["serial"] = False
    if no_guest_agent:
        data["guest_agent"] = False
    if "name" not in data:
        raise InvalidInput(
            "a VM needs a name: give NAME or 'name:' in the spec file", code="invalid_spec"
        )
    spec = parse_vm_spec(data, source)
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


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidInput(f"cannot read {what} {path}: {reason}", code="unreadable_file") from None


def _cloud_init_flags(
    user: str | None, ssh_keys: tuple[str, ...], password: str | None, hostname: str | None,
    packages: tuple[str, ...], runcmd: tuple[str, ...], user_data: str | None,
    network_config: str | None, ip: str | None, gateway: str | None, dns: tuple[str, ...],
    seed: str | None,
) -> dict[str, Any]:  # fmt: skip
    from virtkit.cloudinit import parse_network_config, read_public_key

    ci: dict[str, Any] = {}
    if user:
        ci["user"] = user
    if ssh_keys:
        ci["ssh_keys"] = [read_public_key(k) for k in ssh_keys]
    if password is not None:
        ci["password"] = password
    if hostname:
        ci["hostname"] = hostname
    if packages:
        ci["packages"] = [p.strip() for item in packages for p in item.split(",") if p.strip()]
    if runcmd:
        ci["runcmd"] = list(runcmd)
    if user_data:
        ci["user_data"] = _read_text(user_data, "user-data file")
    if network_config:
        text = _read_text(network_config, "network-config file")
        ci["network_config"] = parse_network_config(text, network_config)
    if ip:
        ci["ip"] = ip
    if gateway:
        ci["gateway"] = gateway
    if dns:
        ci["dns"] = list(dns)
    if seed:
        ci["seed"] = seed
    return ci


@vm.command("spec-schema")
def spec_schema() -> None:
    """Print the JSON schema of the VM spec file."""
    json.dump(VMSpec.model_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")


# -- reading ---------------------------------------------------------------------------------


@vm.command("list")
@json_option
@pass_state
def list_(state: State, as_json: bool) -> None:
    """List VMs: name, state, vCPUs, memory, uptime."""
    vms = state.client.vms.list()
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
                render.duration(v.uptime),
                ",".join(a.ip for a in addresses.get(v.name, [])) or "-",
                "yes" if v.autostart else "no",
                ",".join(v.tags),
            ]
            for v in vms
        ],
    )


def _show(info: VMInfo) -> None:
    render.fields(
        [
            ("Name", info.name),
            ("UUID", info.uuid),
            ("State", info.state.value),
            ("Uptime", render.duration(info.uptime)),
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


@vm.command("console-log")
@click.argument("name")
@click.option("--tail", "tail_bytes", type=int, help="Only the last N bytes.")
@pass_state
def console_log(state: State, name: str, tail_bytes: int | None) -> None:
    """Print what the VM wrote on its serial console (from the console log)."""
    click.echo(state.client.consoles.read_log(name, tail_bytes=tail_bytes), nl=False)


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
@click.option("--memory", help="New memory, e.g. 1G (bare numbers are MiB).")
@click.option(
    "--ksm",
    type=click.Choice(["on", "off"]),
    help="Let KSM merge this VM's memory, or not (from its next start).",
)
@json_option
@pass_state
def set_(
    state: State, name: str, vcpus: int | None, memory: str | None, ksm: str | None, as_json: bool
) -> None:
    """Change vCPUs and memory (persistently, and live where the running VM allows), and
    whether KSM may merge the VM's memory."""
    changes = []
    if vcpus is not None or memory is not None or ksm is None:
        changes = state.client.vms.set(name, vcpus=vcpus, memory=memory).changes
    if ksm is not None:
        changes.append(state.client.ksm.set_vm(name, ksm == "on"))
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
@click.argument("name")
@click.option("--force", is_flag=True, help="Take the console from another client.")
@pass_state
def console(state: State, name: str, force: bool) -> None:
    """Attach to the VM's serial console. Escape with Ctrl+]."""
    from virtkit.cli.terminal import attach

    stream = state.client.consoles.open(name, force=force)
    click.echo(f"Connected to {name}'s serial console. Escape character is ^] (Ctrl+]).", err=True)
    attach(stream)
    click.echo(f"\nDisconnected from {name}.", err=True)


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


@vm.group()
def disk() -> None:
    """A VM's disks: list, attach (hot-plug on a running VM), detach."""


@disk.command("list")
@click.argument("name")
@json_option
@pass_state
def disk_list(state: State, name: str, as_json: bool) -> None:
    """The VM's disks and CD-ROMs."""
    disks = state.client.disks.list(name)
    if as_json:
        render.print_json(disks)
        return
    render.table(
        ["TARGET", "DEVICE", "BUS", "FORMAT", "SOURCE", "OWNED"],
        [
            [
                d.target,
                d.device,
                d.bus or "-",
                d.format or "-",
                d.source or "-",
                "yes" if d.owned else "no",
            ]
            for d in disks
        ],
    )


@disk.command("attach")
@click.argument("name")
@click.argument("source")
@click.option("--bus", type=click.Choice(["virtio", "scsi"]), default="virtio")
@click.option("--readonly", is_flag=True)
@pass_state
def disk_attach(state: State, name: str, source: str, bus: str, readonly: bool) -> None:
    """Attach SOURCE: an image path, or a size (e.g. 10G) for a new blank volume."""
    spec = _parse_disk(source)
    view = state.client.disks.attach(
        name, path=spec.get("path"), size=spec.get("size"), bus=bus, readonly=readonly
    )
    click.echo(f"attached {view.source} to {name} as {view.target}")


@disk.command("detach")
@click.argument("name")
@click.argument("target")
@click.option(
    "--remove-storage", is_flag=True, help="Also delete the disk if virtkit created it for this VM."
)
@pass_state
def disk_detach(state: State, name: str, target: str, remove_storage: bool) -> None:
    """Detach the disk at TARGET (e.g. vdb)."""
    removed = state.client.disks.detach(name, target, remove_storage=remove_storage)
    click.echo(f"detached {target} from {name}" + "".join(f"; removed {p}" for p in removed))


@vm.group()
def cdrom() -> None:
    """Change or eject a VM's CD-ROM media."""


@cdrom.command("change")
@click.argument("name")
@click.argument("iso", type=click.Path(resolve_path=True))
@click.option("--target", help="Which CD-ROM (default: the first).")
@pass_state
def cdrom_change(state: State, name: str, iso: str, target: str | None) -> None:
    """Insert ISO into the VM's CD-ROM."""
    where = state.client.disks.change_media(name, iso, target)
    click.echo(f"inserted {iso} into {name}'s {where}")


@cdrom.command("eject")
@click.argument("name")
@click.option("--target", help="Which CD-ROM (default: the first).")
@pass_state
def cdrom_eject(state: State, name: str, target: str | None) -> None:
    """Eject the VM's CD-ROM media."""
    where = state.client.disks.change_media(name, None, target)
    click.echo(f"ejected {name}'s {where}")


# -- NICs and addresses ------------------------------------------------------------------------


@vm.group()
def nic() -> None:
    """A VM's network interfaces: list, add (hot-plug), remove, link up/down."""


@nic.command("list")
@click.argument("name")
@json_option
@pass_state
def nic_list(state: State, name: str, as_json: bool) -> None:
    """The VM's NICs: MAC, kind, network or bridge, model, link, host device."""
    nics = state.client.nics.list(name)
    if as_json:
        render.print_json(nics)
        return
    render.table(
        ["MAC", "TYPE", "SOURCE", "MODEL", "LINK", "DEVICE"],
        [[n.mac, n.type, n.source or "-", n.model or "-", n.link, n.target or "-"] for n in nics],
    )


@nic.command("add")
@click.argument("name")
@click.option("--network", help="A virtual network.")
@click.option("--bridge", help="A host bridge.")
@click.option("--direct", help="A host interface (macvtap).")
@click.option(
    "--mode", type=click.Choice(["bridge", "vepa", "private", "passthrough"]), default="bridge",
    help="macvtap mode (with --direct).",
)  # fmt: skip
@click.option("--mac", help="MAC address (default: a new one in 52:54:00:xx:xx:xx).")
@click.option(
    "--model", default="virtio", show_default=True, help="virtio, e1000e, e1000, rtl8139."
)
@pass_state
def nic_add(state: State, name: str, network: str | None, bridge: str | None,
            direct: str | None, mode: str, mac: str | None, model: str) -> None:  # fmt: skip
    """Add a NIC (hot-plugged into a running VM, kept in its definition)."""
    info = state.client.nics.add(
        name, network=network, bridge=bridge, direct=direct, mode=mode, mac=mac, model=model
    )
    click.echo(f"NIC {info.mac} added to {name} ({info.type} {info.source})")


@nic.command("remove")
@click.argument("name")
@click.argument("mac")
@pass_state
def nic_remove(state: State, name: str, mac: str) -> None:
    """Remove the NIC with this MAC (hot-unplug on a running VM)."""
    state.client.nics.remove(name, mac)
    click.echo(f"NIC {mac} removed from {name}")


@nic.command("set-link")
@click.argument("name")
@click.argument("mac")
@click.argument("state_", metavar="up|down", type=click.Choice(["up", "down"]))
@pass_state
def nic_set_link(state: State, name: str, mac: str, state_: str) -> None:
    """Plug (up) or pull (down) the NIC's virtual cable."""
    info = state.client.nics.set_link(name, mac, state_ == "up")
    click.echo(f"NIC {info.mac} of {name}: link {info.link}")


@vm.command("ip")
@click.argument("names", nargs=-1)
@json_option
@pass_state
def ip(state: State, names: tuple[str, ...], as_json: bool) -> None:
    """Guest IP addresses (of the VMs named, or of every running VM), and which source answered:
    DHCP lease, guest agent or the host's neighbour table (arp)."""
    if len(names) == 1:
        found = {names[0]: state.client.nics.ip(names[0])}
    else:
        found = state.client.nics.addresses(list(names) or None)
    if as_json:
        click.echo(json.dumps({n: [a.model_dump() for a in addrs] for n, addrs in found.items()},
                              indent=2))  # fmt: skip
        return
    render.table(
        ["NAME", "MAC", "ADDRESS", "SOURCE"],
        [[n, a.mac, f"{a.ip}/{a.prefix}", a.source] for n, addrs in found.items() for a in addrs],
    )


# -- reaching the guest -------------------------------------------------------------------------


@vm.command("wait")
@click.argument("name")
@click.option("--for", "what", type=click.Choice(["boot", "cloud-init", "ssh"]), default="ssh",
              show_default=True, help="What to wait for.")  # fmt: skip
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds.")
@pass_state
def wait(state: State, name: str, what: str, timeout: float) -> None:
    """Wait until the VM has booted, finished cloud-init, or answers SSH."""
    seconds = state.client.access.wait(name, what, timeout)
    click.echo(f"{name}: {what} after {seconds:.1f} s")


@vm.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--user", "-l", "login", help="Login (default: the user cloud-init made).")
@click.option("--identity", "-i", type=click.Path(), help="Private key file for ssh.")
@click.option("--no-host-key-check", is_flag=True,
              help="Accept whatever host key the guest shows (for a guest that did not take the "
                   "keys virtkit made for it).")  # fmt: skip
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def ssh(state: State, name: str, login: str | None, identity: str | None,
        no_host_key_check: bool, command: tuple[str, ...]) -> None:  # fmt: skip
    """SSH into the VM (user-mode forward or its address): virtkit vm ssh NAME [-- cmd ...]."""
    import shutil
    import subprocess
    import tempfile

    access = state.client.access
    address, port = access.ssh_target(name)
    user = login or access.login_user(name)
    pinned = None if no_host_key_check else access.known_hosts(name)
    if not shutil.which("ssh"):
        raise InvalidInput("ssh is not installed (apt-get install openssh-client)", code="no_ssh")
    argv = ["ssh", "-p", str(port), "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes" if command else "BatchMode=no"]  # fmt: skip
    if identity:
        argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
    with tempfile.TemporaryDirectory(prefix="virtkit-ssh-") as tmp:
        if pinned is not None:  # only the host keys virtkit made for this guest are accepted
            alias, text = pinned
            known = Path(tmp) / "known_hosts"
            known.write_text(text)
            argv += ["-o", f"HostKeyAlias={alias}", "-o", f'UserKnownHostsFile="{known}"',
                     "-o", "GlobalKnownHostsFile=/dev/null",
                     "-o", "StrictHostKeyChecking=yes"]  # fmt: skip
        else:  # the guest made its own keys: nothing to check them against
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv += ["--", f"{user}@{address}" if user else address]  # never read as an option
        argv += list(command)
        code = subprocess.run(argv, check=False).returncode
    if code == 255 and pinned is not None:  # ssh's own failures (not the remote command's)
        click.echo(
            f"virtkit: if ssh said 'Host key verification failed', {name} does not show the host "
            "keys virtkit made for it ('vm show' lists them): a guest that ignores cloud-init's "
            "ssh_keys (cloudbase-init) or another machine answering. --no-host-key-check skips "
            "the check.",
            err=True,
        )
    sys.exit(code)
