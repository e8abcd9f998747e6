"""``/api/v1/pools``, volumes (and their bytes), ``/api/v1/images`` (imports, builds and
templates) and uploads."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.actions import action_routes
from virtkit.api.routes.vms import _Body
from virtkit.api.security import Principal, require
from virtkit.api.tasking import accepted
from virtkit.errors import InvalidInput
from virtkit.specs.common import validate_name
from virtkit.specs.storage import (
    ImageInfo,
    PoolInfo,
    PoolSpec,
    VolumeInfo,
    VolumeSpec,
    validate_volume_name,
)
from virtkit.specs.tasks import TaskView

router = APIRouter(tags=["storage"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[Principal, Depends(require("storage.read"))]
Writer = Annotated[Principal, Depends(require("storage.write"))]
ERR = {**NOT_FOUND, **CONFLICT}

UPLOAD_CHUNK = 1024 * 1024


async def _pool(pool: str) -> str:
    return validate_name(pool, "pool")


async def _volume(volume: str) -> str:
    return validate_volume_name(volume)


PoolName = Annotated[str, Depends(_pool)]
VolumeName = Annotated[str, Depends(_volume)]


class ResizeRequest(_Body):
    size: int | str
    shrink: bool = False


class CloneVolumeBody(_Body):
    name: str
    linked: bool = False
    target_pool: str | None = None


class ImportBody(_Body):
    path: str
    pool: str = "default"
    name: str | None = None
    checksum: str | None = None


class BuildBody(_Body):
    name: str = Field(description="The template's name (a volume name).")
    suite: str = Field("bookworm", description="Debian suite.")
    mirror: str | None = Field(
        None, description="Debian mirror URL (default: the service host's, from its apt sources)."
    )
    pool: str | None = Field(
        None, description="Pool for the image (default: the configured pool, made if missing)."
    )
    size_gib: int = Field(2, description="Disk size in GiB.")


class TemplateBody(_Body):
    template: bool = True
    os: str | None = None


# -- pools -----------------------------------------------------------------------------------


@router.get("/pools", response_model=list[PoolInfo])
async def list_pools(ctx: Ctx, _: Reader) -> list[PoolInfo]:
    return await run_in_threadpool(ctx.client.pools.list_pools)


@router.get("/pools/{pool}", response_model=PoolInfo, responses=NOT_FOUND)
async def get_pool(ctx: Ctx, pool: PoolName, _: Reader) -> PoolInfo:
    return await run_in_threadpool(ctx.client.pools.get_pool, pool)


@router.post("/pools", status_code=201, response_model=PoolInfo, responses=ERR)
def create_pool(
    ctx: Ctx, spec: PoolSpec, _: Writer, start: Annotated[bool, Query()] = True
) -> PoolInfo:
    return ctx.client.pools.create_pool(spec, start=start)


action_routes(
    router,
    path="/pools/{pool}",
    ident=("pool", PoolName),
    caller=Writer,
    service=lambda ctx: ctx.client.pools,
    read="get_pool",
    model=PoolInfo,
    kind="pool",
    actions={
        "start": ("start_pool", "Start (activate) a pool."),
        "stop": ("stop_pool", "Stop a pool (its volumes stay)."),
        "refresh": ("refresh_pool", "Rescan a pool's directory for volumes."),
    },
    responses=ERR,
)


@router.patch("/pools/{pool}", response_model=PoolInfo, responses=ERR)
def change_pool(
    ctx: Ctx, pool: PoolName, _: Writer, autostart: Annotated[bool, Query()]
) -> PoolInfo:
    ctx.client.pools.set_pool_autostart(pool, autostart)
    return ctx.client.pools.get_pool(pool)


@router.delete("/pools/{pool}", status_code=204, responses=ERR)
def delete_pool(
    ctx: Ctx,
    pool: PoolName,
    _: Writer,
    delete_dir: Annotated[
        bool, Query(description="Also remove the pool's (empty) directory.")
    ] = False,
) -> Response:
    """Remove a pool's definition; its volumes must be gone (libvirt refuses otherwise)."""
    ctx.client.pools.delete_pool(pool, delete_dir=delete_dir)
    return Response(status_code=204)


# -- volumes ---------------------------------------------------------------------------------


@router.get("/pools/{pool}/volumes", response_model=list[VolumeInfo], responses=NOT_FOUND)
def list_volumes(ctx: Ctx, pool: PoolName, _: Reader) -> list[VolumeInfo]:
    return ctx.client.pools.list_volumes(pool)


@router.get("/pools/{pool}/volumes/{volume}", response_model=VolumeInfo, responses=NOT_FOUND)
def get_volume(ctx: Ctx, pool: PoolName, volume: VolumeName, _: Reader) -> VolumeInfo:
    return ctx.client.pools.get_volume(pool, volume)


@router.post("/pools/{pool}/volumes", status_code=201, response_model=VolumeInfo, responses=ERR)
def create_volume(ctx: Ctx, pool: PoolName, spec: VolumeSpec, _: Writer) -> VolumeInfo:
    return ctx.client.pools.create_volume(pool, spec)


@router.post("/pools/{pool}/volumes/{volume}/resize", response_model=VolumeInfo, responses=ERR)
def resize_volume(
    ctx: Ctx, pool: PoolName, volume: VolumeName, body: ResizeRequest, _: Writer
) -> VolumeInfo:
    """Grow (or, with ``shrink``, shrink: data past the new end is lost) a volume."""
    ctx.client.pools.resize_volume(pool, volume, body.size, shrink=body.shrink)
    return ctx.client.pools.get_volume(pool, volume)


@router.post(
    "/pools/{pool}/volumes/{volume}/clone",
    status_code=202,
    response_model=TaskView,
    responses=ERR,
)
def clone_volume(
    ctx: Ctx,
    pool: PoolName,
    volume: VolumeName,
    body: CloneVolumeBody,
    request: Request,
    response: Response,
    who: Writer,
) -> TaskView:
    """A full copy or a linked clone (qcow2 overlay): a task."""
    new = validate_volume_name(body.name)
    target = validate_name(body.target_pool, "pool") if body.target_pool else pool
    pools = ctx.client.pools
    pools.get_volume(pool, volume)  # 404 now

    def work(task: Any) -> VolumeInfo:
        task.say(f"cloning {pool}/{volume} to {target}/{new}")
        return pools.clone_volume(pool, volume, new, linked=body.linked, target_pool=target)

    recovery = {"pool": target, "volume": new}
    task = ctx.tasks.submit("volume.clone", f"{target}/{new}", who.user, work, recovery=recovery)
    return accepted(request, response, task)


@router.get(
    "/pools/{pool}/volumes/{volume}/content",
    response_class=StreamingResponse,
    responses={
        **ERR,
        200: {
            "description": "The volume's bytes.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    },
)
async def download_volume(
    ctx: Ctx, pool: PoolName, volume: VolumeName, _: Writer
) -> StreamingResponse:
    """The volume's bytes, streamed through libvirt (remote hosts too), as `virtkit volume
    download`. Needs `storage.write`: a VM's disk holds its data. Errors (no such volume, a
    stopped pool, a driver that cannot download) answer before the first byte."""
    chunks = await run_in_threadpool(ctx.client.pools.download, pool, volume)
    # The stream is opened on the first chunk: its errors are still an error answer here.
    first = await run_in_threadpool(next, chunks, b"")
    return StreamingResponse(
        _after(first, chunks),
        media_type="application/octet-stream",
        headers={"Content-Disposition": attachment(volume)},
    )


def _after(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    try:
        if first:
            yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()  # a client that went away: the libvirt stream is aborted now


def attachment(filename: str) -> str:
    """``Content-Disposition`` for a download named ``filename`` (RFC 6266; non-ASCII and
    quotes percent-encoded in ``filename*``)."""
    quoted = quote(filename, safe="")
    if quoted == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quoted}"


@router.delete("/pools/{pool}/volumes/{volume}", response_model=VolumeInfo, responses=ERR)
def delete_volume(
    ctx: Ctx,
    pool: PoolName,
    volume: VolumeName,
    _: Writer,
    wipe: Annotated[bool, Query(description="Overwrite its data first.")] = False,
) -> VolumeInfo:
    """Delete a volume (and its data): refused while a VM uses it or a clone is based on it.
    Returns what was deleted."""
    return ctx.client.pools.delete_volume(pool, volume, wipe=wipe)


# -- images and templates --------------------------------------------------------------------


@router.get("/images", response_model=list[ImageInfo])
def list_images(
    ctx: Ctx, _: Reader, templates: Annotated[bool, Query()] = False
) -> list[ImageInfo]:
    return ctx.client.images.list(templates_only=templates)


@router.get("/images/{pool}/{volume}", response_model=ImageInfo, responses=NOT_FOUND)
def get_image(ctx: Ctx, pool: PoolName, volume: VolumeName, _: Reader) -> ImageInfo:
    return ctx.client.images.get(pool, volume)


@router.post("/images", status_code=202, response_model=TaskView, responses=ERR)
def import_image(
    ctx: Ctx, body: ImportBody, request: Request, response: Response, who: Writer
) -> TaskView:
    """Import a disk image from a file on the service's machine (qcow2, raw, vmdk, vdi;
    compressed too): a task with progress in bytes."""
    pool = validate_name(body.pool, "pool")
    name = validate_volume_name(body.name) if body.name else None
    return _import_task(ctx, request, response, who, body.path, pool, name, body.checksum)


@router.post("/images/build", status_code=202, response_model=TaskView, responses=ERR)
def build_image(
    ctx: Ctx, body: BuildBody, request: Request, response: Response, who: Writer
) -> TaskView:
    """Build a Debian cloud image with cloud-init (debootstrap, on the service's host, as root)
    and make it a template that boots its own kernel, as `virtkit image build`: a task (about
    1.5 min). Everything the build needs is checked first (name, suite, mirror, size, root,
    the tools, the pool, a free name): a bad request is refused at once and makes nothing."""
    name = validate_volume_name(body.name)
    pool = validate_name(body.pool, "pool") if body.pool else None
    images = ctx.client.images
    chosen = images.check_build(
        name, pool, suite=body.suite, mirror=body.mirror, size_gib=body.size_gib
    )
    build_dir = images.build_dir(name)
    request.state.audit_target = f"{chosen}/{name}"

    def work(task: Any) -> ImageInfo:
        return images.build(
            name, chosen, build_dir=build_dir, suite=body.suite, mirror=body.mirror,
            size_gib=body.size_gib, progress=task.say,
        )  # fmt: skip

    recovery = {"pool": chosen, "volume": name, "build_dir": str(build_dir)}
    task = ctx.tasks.submit("image.build", f"{chosen}/{name}", who.user, work, recovery=recovery)
    return accepted(request, response, task)


def _import_task(
    ctx: ApiContext,
    request: Request,
    response: Response,
    who: Principal,
    path: str,
    pool: str,
    name: str | None,
    checksum: str | None,
    *,
    remove_after: bool = False,
) -> TaskView:
    images = ctx.client.images
    images.pools.get_pool(pool)  # 404 now
    target = name or Path(path).name

    def work(task: Any) -> ImageInfo:
        def progress(phase: str, done: int, total: int | None) -> None:
            task.progress(phase=phase, done_bytes=done, total_bytes=total)

        try:
            return images.import_image(path, pool, name, checksum=checksum, progress=progress)
        finally:
            if remove_after:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    recovery = {"pool": pool, "volume": target}
    task = ctx.tasks.submit("image.import", f"{pool}/{target}", who.user, work, recovery=recovery)
    return accepted(request, response, task)


@router.put(
    "/upload/{pool}/{volume}",
    status_code=202,
    response_model=TaskView,
    responses=ERR,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def upload_image(
    ctx: Ctx, pool: PoolName, volume: VolumeName, request: Request, response: Response, who: Writer
) -> TaskView:
    """Upload a disk image (the request body, any size) and import it as ``pool/volume``: the
    body is received first, then the import is a task."""
    work_dir = ctx.settings.cache_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"upload-{volume}-", dir=work_dir)
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                received += len(chunk)
        if received == 0:
            raise InvalidInput("the upload is empty", code="invalid_image")
        return _import_task(ctx, request, response, who, tmp, pool, volume, None, remove_after=True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@router.patch("/images/{pool}/{volume}", response_model=ImageInfo, responses=ERR)
def change_image(
    ctx: Ctx, pool: PoolName, volume: VolumeName, body: TemplateBody, _: Writer
) -> ImageInfo:
    """Mark (or unmark) an image as a template: a read-only base for linked clones."""
    return ctx.client.images.set_template(pool, volume, os_name=body.os, on=body.template)
