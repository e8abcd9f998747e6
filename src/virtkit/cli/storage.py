"""``virtkit pool ...`` and ``virtkit volume ...``: storage."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from virtkit.cli import render
from virtkit.cli.progress import ProgressBar
from virtkit.cli.state import State, json_option, pass_state
from virtkit.errors import InvalidInput
from virtkit.specs import PoolSpec, VolumeSpec, parse_model


def _pool_option(fn: Any) -> Any:
    return click.option("--pool", "-p", help="Storage pool (default: the configured pool).")(fn)


def _pool(state: State, pool: str | None) -> str:
    return pool or str(state.client.settings.storage_pool)


# -- pools -------------------------------------------------------------------------------------


@click.group()
def pool() -> None:
    """Storage pools: where volumes live."""


@pool.command("list")
@json_option
@pass_state
def pool_list(state: State, as_json: bool) -> None:
    """List pools: type, state, path, capacity, free."""
    pools = state.client.pools.list_pools()
    if as_json:
        render.print_json(pools)
        return
    render.table(
        ["NAME", "TYPE", "STATE", "AUTOSTART", "PATH", "CAPACITY", "FREE", "VOLUMES"],
        [
            [
                p.name,
                p.type,
                "active" if p.active else "inactive",
                "yes" if p.autostart else "no",
                p.path or "-",
                render.size(p.capacity),
                render.size(p.available),
                "-" if p.volumes is None else str(p.volumes),
            ]
            for p in pools
        ],
    )


@pool.command("show")
@click.argument("name")
@json_option
@pass_state
def pool_show(state: State, name: str, as_json: bool) -> None:
    """Details of one pool."""
    p = state.client.pools.get_pool(name)
    if as_json:
        render.print_json(p)
        return
    render.fields(
        [
            ("Name", p.name),
            ("Type", p.type),
            ("State", "active" if p.active else "inactive"),
            ("Autostart", "yes" if p.autostart else "no"),
            ("Path", p.path),
            ("Source", p.source),
            ("Capacity", render.size(p.capacity)),
            ("Allocation", render.size(p.allocation)),
            ("Free", render.size(p.available)),
            ("Volumes", p.volumes),
        ]
    )


@pool.command("create")
@click.argument("name")
@click.option(
    "--type",
    "pool_type",
    default="dir",
    type=click.Choice(["dir", "logical", "netfs", "iscsi", "rbd"]),
    help="Pool type.",
)
@click.option("--path", help="Target directory (dir, netfs), or /dev/VG (logical).")
@click.option("--source-host", help="Server (netfs, iscsi, rbd).")
@click.option("--source-path", help="Export path (netfs) or target IQN (iscsi).")
@click.option("--source-name", help="Volume group (logical) or Ceph pool (rbd).")
@click.option("--source-device", "source_devices", multiple=True, help="A PV (logical).")
@click.option("--source-format", help="e.g. nfs (netfs), lvm2 (logical).")
@click.option("--auth-username", help="Ceph user (rbd).")
@click.option("--auth-secret-uuid", help="libvirt secret holding the Ceph key (rbd).")
@click.option("--no-autostart", is_flag=True, help="Do not start with libvirtd.")
@click.option("--no-start", is_flag=True, help="Define only.")
@json_option
@pass_state
def pool_create(
    state: State,
    name: str,
    pool_type: str,
    path: str | None,
    source_host: str | None,
    source_path: str | None,
    source_name: str | None,
    source_devices: tuple[str, ...],
    source_format: str | None,
    auth_username: str | None,
    auth_secret_uuid: str | None,
    no_autostart: bool,
    no_start: bool,
    as_json: bool,
) -> None:
    """Create a pool (directory pools are made and started)."""
    data = {
        "name": name,
        "type": pool_type,
        "path": path,
        "source_host": source_host,
        "source_path": source_path,
        "source_name": source_name,
        "source_devices": list(source_devices),
        "source_format": source_format,
        "auth_username": auth_username,
        "auth_secret_uuid": auth_secret_uuid,
        "autostart": not no_autostart,
    }
    spec = parse_model(PoolSpec, {k: v for k, v in data.items() if v is not None}, "pool spec")
    info = state.client.pools.create_pool(spec, start=not no_start)
    if as_json:
        render.print_json(info)
    else:
        click.echo(
            f"created {info.type} pool {info.name} at {info.path or info.source}"
            f" ({'active' if info.active else 'defined'})"
        )


def _pool_action(command: str, method: str, done: str, help_text: str) -> None:
    @pool.command(command, help=help_text)
    @click.argument("name")
    @pass_state
    def run(state: State, name: str) -> None:
        getattr(state.client.pools, method)(name)
        click.echo(f"{done} pool {name}")


_pool_action("start", "start_pool", "started", "Start a pool.")
_pool_action("stop", "stop_pool", "stopped", "Stop a pool (its volumes stay).")
_pool_action("refresh", "refresh_pool", "refreshed", "Rescan a pool's volumes.")


@pool.command("autostart")
@click.argument("name")
@click.argument("mode", type=click.Choice(["on", "off"]))
@pass_state
def pool_autostart(state: State, name: str, mode: str) -> None:
    """Start the pool with libvirtd: on or off."""
    state.client.pools.set_pool_autostart(name, mode == "on")
    click.echo(f"autostart {mode} for pool {name}")


@pool.command("delete")
@click.argument("name")
@click.option("--delete-dir", is_flag=True, help="Also remove the pool's (empty) directory.")
@pass_state
def pool_delete(state: State, name: str, delete_dir: bool) -> None:
    """Undefine a pool (refused while it holds volumes)."""
    state.client.pools.delete_pool(name, delete_dir=delete_dir)
    click.echo(f"deleted pool {name}" + (" and its directory" if delete_dir else ""))


# -- volumes -----------------------------------------------------------------------------------


@click.group()
def volume() -> None:
    """Volumes (disk images) in storage pools."""


@volume.command("list")
@_pool_option
@json_option
@pass_state
def volume_list(state: State, pool: str | None, as_json: bool) -> None:
    """List volumes: format, capacity, allocation, backing file, users."""
    vols = state.client.pools.list_volumes(_pool(state, pool))
    if as_json:
        render.print_json(vols)
        return
    render.table(
        ["NAME", "FORMAT", "CAPACITY", "ALLOCATION", "BACKING", "USED BY"],
        [
            [
                v.name,
                v.format or "-",
                render.size(v.capacity),
                render.size(v.allocation),
                v.backing or "-",
                ",".join(v.used_by) or "-",
            ]
            for v in vols
        ],
    )


@volume.command("show")
@click.argument("name")
@_pool_option
@json_option
@pass_state
def volume_show(state: State, name: str, pool: str | None, as_json: bool) -> None:
    """One volume, with its backing chain."""
    v = state.client.pools.get_volume(_pool(state, pool), name)
    if as_json:
        render.print_json(v)
        return
    render.fields(
        [
            ("Name", v.name),
            ("Pool", v.pool),
            ("Path", v.path),
            ("Format", v.format),
            ("Capacity", render.size(v.capacity)),
            ("Allocation", render.size(v.allocation)),
            ("Used by", ", ".join(v.used_by)),
            ("Backing chain", " -> ".join([v.path, *v.backing_chain]) if v.backing_chain else "-"),
        ]
    )


@volume.command("create", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("size")
@_pool_option
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), default="qcow2")
@click.option("--preallocation", type=click.Choice(["off", "metadata", "full"]), default="off")
@json_option
@pass_state
def volume_create(
    state: State,
    name: str,
    size: str,
    pool: str | None,
    fmt: str,
    preallocation: str,
    as_json: bool,
) -> None:
    """Create an empty volume of SIZE (e.g. 10G; a bare number is GiB)."""
    spec = parse_model(
        VolumeSpec,
        {"name": name, "size": size, "format": fmt, "preallocation": preallocation},
        "volume spec",
    )
    info = state.client.pools.create_volume(_pool(state, pool), spec)
    if as_json:
        render.print_json(info)
    else:
        click.echo(
            f"created {info.format} volume {info.name} ({render.size(info.capacity)}) "
            f"at {info.path}"
        )


@volume.command("resize", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("size")
@_pool_option
@click.option(
    "--shrink", is_flag=True, help="Allow a smaller size: the data past the new end is lost."
)
@pass_state
def volume_resize(state: State, name: str, size: str, pool: str | None, shrink: bool) -> None:
    """Grow a volume to SIZE (shrinking needs --shrink)."""
    click.echo(state.client.pools.resize_volume(_pool(state, pool), name, size, shrink=shrink))


@volume.command("delete")
@click.argument("name")
@_pool_option
@click.option("--wipe", is_flag=True, help="Overwrite the data before deleting.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def volume_delete(state: State, name: str, pool: str | None, wipe: bool, yes: bool) -> None:
    """Delete a volume and its data (refused while a VM uses it)."""
    pools = state.client.pools
    info = pools.get_volume(_pool(state, pool), name)
    if not yes:
        click.echo(
            f"This permanently deletes {info.path} ({render.size(info.capacity)}).", err=True
        )
        if not sys.stdin.isatty():
            raise InvalidInput(
                "refusing to delete without confirmation: add --yes", code="confirmation_required"
            )
        click.confirm("Delete it?", abort=True, err=True)
    pools.delete_volume(info.pool, name, wipe=wipe)
    click.echo(f"deleted volume {name} ({info.path})")


@volume.command("clone")
@click.argument("source")
@click.argument("new_name")
@_pool_option
@click.option("--to-pool", help="Create the copy in another pool.")
@click.option("--linked", is_flag=True, help="A qcow2 overlay on SOURCE instead of a full copy.")
@json_option
@pass_state
def volume_clone(
    state: State,
    source: str,
    new_name: str,
    pool: str | None,
    to_pool: str | None,
    linked: bool,
    as_json: bool,
) -> None:
    """Copy a volume (or make a linked clone of it)."""
    info = state.client.pools.clone_volume(
        _pool(state, pool), source, new_name, linked=linked, target_pool=to_pool
    )
    if as_json:
        render.print_json(info)
    else:
        kind = f"linked clone of {info.backing}" if linked else "full copy"
        click.echo(f"created {info.name} at {info.path} ({kind})")


@volume.command("upload")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_pool_option
@pass_state
def volume_upload(state: State, name: str, file: str, pool: str | None) -> None:
    """Copy FILE's bytes into the existing volume NAME (a libvirt stream: remote hosts too)."""
    size = os.path.getsize(file)
    bar = ProgressBar(f"uploading {name}", size)
    with open(file, "rb") as source:
        done = state.client.pools.upload(_pool(state, pool), name, source, size, progress=bar)
    bar.close()
    click.echo(f"uploaded {render.size(done)} into {name}")


@volume.command("download")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@_pool_option
@pass_state
def volume_download(state: State, name: str, file: str, pool: str | None) -> None:
    """Copy the volume's bytes into FILE (a libvirt stream: remote hosts too)."""
    pools = state.client.pools
    info = pools.get_volume(_pool(state, pool), name)
    target = Path(file)
    if target.exists():
        raise InvalidInput(f"{file} exists: refusing to overwrite it", code="file_exists")
    bar = ProgressBar(f"downloading {name}", info.allocation or None)
    partial = target.with_name(target.name + ".part")
    try:
        with open(partial, "wb") as out:
            for chunk in pools.download(info.pool, name, progress=bar):
                out.write(chunk)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
        bar.close()
    click.echo(f"downloaded {name} to {file} ({render.size(target.stat().st_size)})")
