"""``virtkit vm create``'s flags and spec file -> a ``VMSpec``; ``virtkit vm spec-schema``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from virtkit.errors import InvalidInput

if TYPE_CHECKING:
    from virtkit.specs import VMSpec

F = TypeVar("F", bound=Callable[..., Any])

SPEC_OPTIONS: list[Callable[[Any], Any]] = [
    click.argument("name", required=False),
    click.option(
        "-f",
        "--file",
        "spec_file",
        type=click.Path(dir_okay=False),
        help="A YAML spec (see 'virtkit vm spec-schema'); flags override its keys.",
    ),
    click.option("--vcpus", type=int, help="Virtual CPUs (default 1)."),
    click.option(
        "--max-vcpus",
        type=int,
        help="vCPU maximum, up to which the running VM takes vCPUs live (default twice --vcpus, "
        "within the machine type's limit).",
    ),
    click.option("--memory", help="Memory, e.g. 512M, 2G (default 512M; bare numbers are MiB)."),
    click.option(
        "--disk",
        "disks",
        multiple=True,
        help="A disk: 10G (new qcow2), /path/to/image, or size=10G,bus=virtio. Repeatable.",
    ),
    click.option(
        "--cdrom", type=click.Path(resolve_path=True), help="An ISO image to boot from / attach."
    ),
    click.option(
        "--kernel",
        type=click.Path(resolve_path=True),
        help="Direct kernel boot: kernel image on the host.",
    ),
    click.option(
        "--initrd",
        type=click.Path(resolve_path=True),
        help="Direct kernel boot: initrd on the host.",
    ),
    click.option("--cmdline", help="Direct kernel boot: kernel command line."),
    click.option("--boot", help="Boot order, e.g. cdrom,hd."),
    click.option("--graphics", type=click.Choice(["none", "vnc", "spice"]), help="Display."),
    click.option("--machine", help="Machine type (default q35)."),
    click.option("--cpu", help="CPU mode (host-passthrough, host-model, maximum) or model."),
    click.option("--image", help="Boot disk: a clone of this template (NAME or POOL/NAME)."),
    click.option("--full", is_flag=True, help="With --image: a full copy, not a linked clone."),
    click.option("--description", help="Free text shown by 'vm show'."),
    click.option("--tag", "tags", multiple=True, help="A tag (repeatable)."),
    click.option(
        "--network", "networks", multiple=True, help="A NIC on this network (repeatable)."
    ),
    click.option(
        "--bridge", "bridges", multiple=True, help="A NIC on this host bridge (repeatable)."
    ),
    click.option(
        "--ssh-forward",
        type=int,
        help="A user-mode NIC (no host network touched); this port on 127.0.0.1 reaches its SSH.",
    ),
    click.option("--user", "ci_user", help="cloud-init: a user to create, with sudo."),
    click.option(
        "--ssh-key",
        "ssh_keys",
        multiple=True,
        type=click.Path(),
        help="cloud-init: an SSH public key file for the user (repeatable).",
    ),
    click.option(
        "--password",
        help="cloud-init: the user's password (stored hashed; visible to local users in the "
        "process list while the command runs: prefer --password-file).",
    ),
    click.option(
        "--password-file",
        type=click.Path(),
        help="cloud-init: read the user's password from this file ('-': stdin).",
    ),
    click.option("--hostname", help="cloud-init: host name (default: the VM's name)."),
    click.option(
        "--packages", multiple=True, help="cloud-init: packages to install (a,b or repeat)."
    ),
    click.option("--run", "runcmd", multiple=True, help="cloud-init: a command at first boot."),
    click.option("--user-data", type=click.Path(), help="cloud-init: your user-data, merged."),
    click.option("--network-config", type=click.Path(), help="cloud-init: network-config v1/v2."),
    click.option("--ip", help="cloud-init: static address with prefix, e.g. 198.18.0.10/24."),
    click.option("--gateway", help="cloud-init: default gateway (with --ip)."),
    click.option("--dns", multiple=True, help="cloud-init: DNS server (with --ip; repeatable)."),
    click.option(
        "--seed",
        type=click.Choice(["nocloud", "configdrive"]),
        help="cloud-init seed format (default nocloud).",
    ),
    click.option(
        "--no-host-keys",
        is_flag=True,
        help="cloud-init: let the guest make its SSH host keys (default: virtkit makes "
        "them; 'vm ssh' accepts only those; cloudbase-init needs this).",
    ),
    click.option("--no-serial", is_flag=True, help="No serial console."),
    click.option("--no-guest-agent", is_flag=True, help="No channel for the QEMU guest agent."),
    click.option("--autostart", is_flag=True, default=None, help="Start with the host."),
]


def spec_options(command: F) -> F:
    """NAME and every flag that goes into the spec (``spec_from_flags`` takes them all), in
    the order 'vm create --help' lists them."""
    for option in reversed(SPEC_OPTIONS):
        command = option(command)
    return command


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


def parse_disk(value: str) -> dict[str, Any]:
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


def spec_from_flags(
    *,
    name: str | None,
    spec_file: str | None,
    vcpus: int | None,
    max_vcpus: int | None,
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
) -> VMSpec:
    """The spec the flags ask for: the spec file's keys, then each flag given over them."""
    data = _load_spec_file(spec_file) if spec_file else {}
    source = f"spec file {spec_file}" if spec_file else "VM spec"
    overrides: dict[str, Any] = {
        "name": name,
        "vcpus": vcpus,
        "max_vcpus": max_vcpus,
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
        data["disks"] = [parse_disk(d) for d in disks]
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
    from virtkit.specs import parse_vm_spec

    return parse_vm_spec(data, source)


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
    ci: dict[str, Any] = {}
    if user:
        ci["user"] = user
    if ssh_keys:  # cloudinit imported only when used: a plain create stays fast (60 ms)
        from virtkit.cloudinit import read_public_key

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
        from virtkit.cloudinit import parse_network_config

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


@click.command("spec-schema")
def spec_schema() -> None:
    """Print the JSON schema of the VM spec file."""
    from virtkit.specs import VMSpec

    json.dump(VMSpec.model_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
