"""``virtkit vm disk ...`` and ``virtkit vm cdrom ...``: a VM's disks after creation."""

from __future__ import annotations

import click

from virtkit.cli import render
from virtkit.cli.state import HostAwareGroup, State, json_option, pass_state
from virtkit.cli.vmspec import parse_disk


@click.group(cls=HostAwareGroup)
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
    spec = parse_disk(source)
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


@click.group(cls=HostAwareGroup)
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
