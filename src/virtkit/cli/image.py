"""``virtkit image ...``: import disk images, and templates for linked clones."""

from __future__ import annotations

import click

from virtkit.cli import render
from virtkit.cli.progress import PhasedProgress
from virtkit.cli.state import State, json_option, pass_state
from virtkit.specs import ImageInfo


@click.group()
def image() -> None:
    """Disk images and templates."""


@image.command("import")
@click.argument("file", type=click.Path(resolve_path=True))
@click.option("--pool", "-p", help="Target pool (default: the configured pool).")
@click.option("--name", help="Volume name (default: the file's name, as .qcow2).")
@click.option("--checksum", help="Expected sha256:HEX or sha512:HEX of FILE.")
@click.option("--template", "as_template", is_flag=True, help="Mark it a template at once.")
@click.option("--os", "os_name", help="OS name kept with a template (e.g. debian12).")
@click.option(
    "--stream",
    is_flag=True,
    help="Convert here and send through a libvirt stream (automatic for remote hosts and "
    "non-directory pools).",
)
@json_option
@pass_state
def import_(
    state: State,
    file: str,
    pool: str | None,
    name: str | None,
    checksum: str | None,
    as_template: bool,
    os_name: str | None,
    stream: bool,
    as_json: bool,
) -> None:
    """Import FILE (qcow2, raw, vmdk, vdi; .gz/.xz/.zst/.bz2 compressed) as a qcow2 volume."""
    images = state.client.images
    target = pool or state.client.settings.storage_pool
    progress = PhasedProgress()
    try:
        info = images.import_image(
            file, target, name, checksum=checksum, progress=progress, via_stream=stream or None
        )
    finally:
        progress.close()
    if as_template:
        info = images.set_template(info.pool, info.name, os_name=os_name)
    if as_json:
        render.print_json(info)
    else:
        click.echo(
            f"imported {file} as {info.pool}/{info.name} ({render.size(info.capacity)}"
            f"{', template' if info.template else ''}) sha256 {info.sha256}"
        )


def _table(images: list[ImageInfo]) -> None:
    render.table(
        ["POOL", "NAME", "TEMPLATE", "OS", "SIZE", "CLONES", "ORIGIN"],
        [
            [
                i.pool,
                i.name,
                "yes" if i.template else "no",
                i.os or "-",
                render.size(i.capacity),
                str(len(i.clones)),
                i.origin or "-",
            ]
            for i in images
        ],
    )


@image.command("list")
@click.option("--templates", is_flag=True, help="Only templates.")
@json_option
@pass_state
def list_(state: State, templates: bool, as_json: bool) -> None:
    """Imported images and templates."""
    images = state.client.images.list(templates_only=templates)
    if as_json:
        render.print_json(images)
    else:
        _table(images)


@image.command("template")
@click.argument("name")
@click.option("--pool", "-p", help="Pool of the volume (default: the configured pool).")
@click.option("--os", "os_name", help="OS name kept with the template (e.g. debian12).")
@click.option("--off", is_flag=True, help="Unmark it.")
@json_option
@pass_state
def template(
    state: State, name: str, pool: str | None, os_name: str | None, off: bool, as_json: bool
) -> None:
    """Mark volume NAME as a template (a read-only base for linked clones)."""
    target = pool or state.client.settings.storage_pool
    info = state.client.images.set_template(target, name, os_name=os_name, on=not off)
    if as_json:
        render.print_json(info)
    else:
        click.echo(f"{info.pool}/{info.name} is {'a template' if info.template else 'no template'}")


@image.command("build")
@click.argument("name")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite.")
@click.option("--mirror", help="Debian mirror (default: the host's, from its apt sources).")
@click.option("--pool", "-p", help="Pool for the image (default: the configured pool).")
@click.option("--size", "size_gib", type=int, default=2, show_default=True, help="Disk GiB.")
@pass_state
def build(
    state: State, name: str, suite: str, mirror: str | None, pool: str | None, size_gib: int
) -> None:
    """Build a Debian cloud image with cloud-init (debootstrap; root) and make it a template:
    'virtkit vm create web1 --image NAME --user admin --ssh-key ~/.ssh/id_ed25519.pub' then
    boots it (direct kernel boot; the kernel stays in virtkit's cache on this host)."""
    info = state.client.images.build(
        name, pool, suite=suite, mirror=mirror, size_gib=size_gib,
        progress=lambda msg: click.echo(f"... {msg}", err=True),
    )  # fmt: skip
    kernel = (info.boot or {}).get("kernel")
    click.echo(f"template {info.pool}/{info.name} ready ({render.size(info.capacity)}, "
               f"kernel {kernel})")  # fmt: skip
