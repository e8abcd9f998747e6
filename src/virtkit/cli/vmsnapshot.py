"""``virtkit vm snapshot ...``: take, list, show, revert and delete a VM's snapshots; and
``virtkit vm disk chain|flatten`` (registered on the disk group)."""

from __future__ import annotations

import time

import click

from virtkit.cli import render
from virtkit.cli.progress import PhasedProgress, confirm
from virtkit.cli.state import HostAwareGroup, State, json_option, pass_state


@click.group(cls=HostAwareGroup)
def snapshot() -> None:
    """Snapshots: internal or external, with or without memory; revert and delete safely."""


@snapshot.command("create")
@click.argument("name")
@click.argument("snapshot_name")
@click.option(
    "--kind",
    type=click.Choice(["external", "internal"]),
    default="external",
    show_default=True,
    help="external: new overlay files (any disk format); internal: inside the qcow2 files.",
)
@click.option(
    "--memory/--disk-only",
    default=None,
    help="Save the running VM's memory too (the default while it runs): a revert resumes it.",
)
@click.option("--description", help="A line to remember it by.")
@click.option("--no-quiesce", is_flag=True, help="Do not ask the guest agent to freeze first.")
@json_option
@pass_state
def snapshot_create(
    state: State,
    name: str,
    snapshot_name: str,
    kind: str,
    memory: bool | None,
    description: str | None,
    no_quiesce: bool,
    as_json: bool,
) -> None:
    """Take snapshot SNAPSHOT_NAME of VM NAME (all its writable disks at once)."""
    made = state.client.snapshots.create(
        name,
        snapshot_name,
        kind="internal" if kind == "internal" else "external",
        memory=memory,
        description=description,
        quiesce=not no_quiesce,
    )
    if as_json:
        render.print_json(made)
        return
    snap = made.snapshot
    what = "disk and memory" if snap.memory else "disk only"
    click.echo(f"snapshot {snap.name} of {name} taken ({snap.kind}, {what})")
    if made.quiesced:
        click.echo("quiesced: the guest agent froze the filesystems first")
    for note in made.notes:
        click.echo(note)


@snapshot.command("list")
@click.argument("name")
@json_option
@pass_state
def snapshot_list(state: State, name: str, as_json: bool) -> None:
    """The VM's snapshots as a tree (* marks the current one), with their files and sizes."""
    from virtkit.specs.snapshot import tree_order

    snaps = state.client.snapshots.list(name)
    if as_json:
        render.print_json(snaps)
        return
    if not snaps:
        click.echo(f"VM {name} has no snapshots")
        return
    rows = []
    for prefix, snap in tree_order(snaps):
        files = ", ".join(f"{f.path} ({render.size(f.size)})" for f in snap.files) or "-"
        rows.append(
            [
                prefix + snap.name + (" *" if snap.current else ""),
                snap.kind,
                snap.state,
                "yes" if snap.memory else "no",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(snap.created)),
                ",".join(d.target for d in snap.disks if d.kind != "no"),
                files,
            ]
        )
    render.table(["NAME", "KIND", "STATE", "MEMORY", "CREATED", "DISKS", "FILES"], rows)


@snapshot.command("show")
@click.argument("name")
@click.argument("snapshot_name")
@json_option
@pass_state
def snapshot_show(state: State, name: str, snapshot_name: str, as_json: bool) -> None:
    """One snapshot: where it is in the tree, its disks and the files it needs."""
    snap = state.client.snapshots.show(name, snapshot_name)
    if as_json:
        render.print_json(snap)
        return
    render.fields(
        [
            ("name", snap.name + (" (current)" if snap.current else "")),
            ("kind", snap.kind),
            ("state", snap.state),
            ("memory", "yes" if snap.memory else "no"),
            ("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.created))),
            ("description", snap.description or "-"),
            ("parent", snap.parent or "-"),
            ("children", ", ".join(snap.children) or "-"),
            ("disks", ", ".join(f"{d.target} ({d.kind})" for d in snap.disks)),
        ]
    )
    for f in snap.files:
        click.echo(f"  {f.role:<7} {f.path} ({render.size(f.size)})")


def _tell(lines: list[str]) -> None:
    for line in lines:
        click.echo(line, err=True)


@snapshot.command("revert")
@click.argument("name")
@click.argument("snapshot_name")
@click.option(
    "--start/--no-start",
    default=None,
    help="Boot the VM after reverting to a disk-only snapshot (--no-start: stay off even if "
    "the snapshot saved a running state).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def snapshot_revert(
    state: State, name: str, snapshot_name: str, start: bool | None, yes: bool
) -> None:
    """Put VM NAME back to SNAPSHOT_NAME; says what the current state loses and asks first."""
    snaps = state.client.snapshots
    plan = snaps.revert_plan(name, snapshot_name, start=start)
    lines = [f"Reverting {name} to {snapshot_name} ({plan.kind}) loses:"]
    lines += [f"  {line}" for line in plan.loses]
    lines += [f"  removes {path}" for path in plan.removes]
    lines.append(f"The VM is then {plan.state_after}.")
    _tell(lines)
    confirm("Revert?", yes)
    done = snaps.revert(name, snapshot_name, start=start)
    click.echo(f"reverted {name} to {snapshot_name}: {done.state_after}")


@snapshot.command("delete")
@click.argument("name")
@click.argument("snapshot_name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def snapshot_delete(state: State, name: str, snapshot_name: str, yes: bool) -> None:
    """Delete SNAPSHOT_NAME; its data is merged so that every other snapshot stays valid."""
    snaps = state.client.snapshots
    plan = snaps.delete_plan(name, snapshot_name)
    lines = [f"Deleting snapshot {snapshot_name} of {name} ({plan.kind}):"]
    lines += [f"  merge {line}" for line in plan.merges]
    lines += [f"  removes {path}" for path in plan.removes]
    lines += [f"  keeps {line}" for line in plan.keeps]
    _tell(lines)
    confirm("Delete it?", yes)
    bar = PhasedProgress()
    try:
        done = snaps.delete(name, snapshot_name, progress=lambda d, t: bar("merging", d, t))
    finally:
        bar.close()
    for line in done.merges:
        click.echo(f"merged {line}")
    click.echo(f"deleted snapshot {snapshot_name} of {name}")


@click.command("chain")
@click.argument("name")
@json_option
@pass_state
def disk_chain(state: State, name: str, as_json: bool) -> None:
    """Each disk's backing chain, active image first, with sizes and snapshots."""
    chains = state.client.snapshots.chain(name)
    if as_json:
        render.print_json(chains)
        return
    rows = []
    for chain in chains:
        for depth, layer in enumerate(chain.layers):
            rows.append(
                [
                    chain.target if depth == 0 else "",
                    "  " * depth + layer.path,
                    layer.format or "-",
                    render.size(layer.size),
                    render.size(layer.virtual_size),
                    layer.snapshot or ("(active)" if depth == 0 else "-"),
                ]
            )
    render.table(["DISK", "FILE", "FORMAT", "SIZE", "VIRTUAL", "SNAPSHOT DATA"], rows)


@click.command("flatten")
@click.argument("name")
@click.argument("target")
@pass_state
def disk_flatten(state: State, name: str, target: str) -> None:
    """Copy disk TARGET's backing chain into its image (refused while snapshots need it)."""
    bar = PhasedProgress()
    try:
        chain = state.client.snapshots.flatten(
            name, target, progress=lambda d, t: bar("flattening", d, t)
        )
    finally:
        bar.close()
    click.echo(f"flattened {target} of {name}: {chain.layers[0].path} stands alone")
