"""``virtkit diag``: diagnostics bundles to attach to a bug report."""

from __future__ import annotations

from pathlib import Path

import click

from virtkit.cli import render
from virtkit.cli.state import State, json_option, pass_state


@click.group()
def diag() -> None:
    """Diagnostics: a bundle of facts, reports, XML and logs, secrets redacted.

    For a bug report or a colleague: what `host info` and `doctor` say, every VM's, network's and
    pool's XML, libvirt's and QEMU's logs (their tails), virtkit's tasks and audit log.
    """


@diag.command("bundle")
@click.argument("vms", nargs=-1)
@click.option("--all-vms", is_flag=True, help="Examine every VM in full, not only those named.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The tarball to write (default: ./virtkit-diag-HOST-TIME.tar.gz); never overwritten.",
)
@json_option
@pass_state
def bundle(
    state: State, vms: tuple[str, ...], all_vms: bool, output: Path | None, as_json: bool
) -> None:
    """Write a .tar.gz (mode 0600) with host facts and versions, `doctor` (host, and `doctor vm`
    for each VM named), all domain, network and pool XML, QEMU, console and libvirtd logs (the
    tail of each, within caps), virtkit's tasks and audit log, dmesg, and MANIFEST.json.

    Passwords, VNC/SPICE passwords, password hashes, private keys, cloud-init secrets and tokens
    are replaced by "(redacted)" in every file. Look before you share it all the same.
    """

    def say(line: str) -> None:
        if not as_json:
            click.echo(f"{line} ...", err=True)

    made = state.client.diag.bundle(list(vms), all_vms=all_vms, output=output, progress=say)
    if as_json:
        render.print_json(made)
        return
    for item in made.errors:
        click.echo(f"not collected: {item}", err=True)
    if made.truncated:
        click.echo(f"cut to their tail: {', '.join(made.truncated)}", err=True)
    for item in made.skipped:
        click.echo(f"left out: {item}", err=True)
    hidden = sum(made.redactions.values())
    click.echo(
        f"{made.path} ({render.size(made.size)}, {made.files} files, {hidden} secrets redacted)"
    )
