"""Images: import a local disk image into a pool (converted to qcow2), and templates.

An import reads the file once, hashing it (sha256) and decompressing it (.gz, .xz, .zst, found by
their magic bytes, not their names) into a work file; checks the checksum if one is given; asks
``qemu-img`` what the image really is (qcow2, raw, vmdk, vdi) and refuses one that is not what its
name says; then creates a qcow2 volume through libvirt and converts into it. A failure at any step
leaves no volume and no work file behind. The same file imported twice is recognised by its hash.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from virtkit.backend.host import Host
from virtkit.errors import (
    AlreadyExists,
    BackendError,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
)
from virtkit.services.pools import PoolService
from virtkit.services.qemuimg import qemu_img_info
from virtkit.services.storage import check_local_file
from virtkit.services.store import Store
from virtkit.services.transaction import Transaction
from virtkit.specs import ImageInfo, VolumeSpec, validate_volume_name

log = logging.getLogger(__name__)

# phase, bytes (or percent) done, total (None if unknown)
ImageProgress = Callable[[str, int, int | None], None]
FORMATS = ("qcow2", "raw", "vmdk", "vdi")
COMPRESSIONS = {
    b"\x1f\x8b": "gz",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zst",
    b"BZh": "bz2",
}
_CHUNK = 4 * 1024 * 1024


def detect_compression(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, kind in COMPRESSIONS.items():
        if head.startswith(magic):
            return kind
    return None


def _decompressor(kind: str | None, raw: BinaryIO) -> BinaryIO:
    if kind is None:
        return raw
    if kind == "gz":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw)


def _read_archive(source: BinaryIO, path: str, kind: str | None) -> bytes:
    try:
        return source.read(_CHUNK)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise InvalidInput(
            f"{path} is a corrupt .{kind} file: {exc}", code="corrupt_archive"
        ) from None
    except Exception as exc:  # zstandard raises its own ZstdError
        if type(exc).__name__ != "ZstdError":
            raise
        raise InvalidInput(
            f"{path} is a corrupt .{kind} file: {exc}", code="corrupt_archive"
        ) from None


class _HashingReader:
    """Reads a file and hashes every byte that passes, reporting progress."""

    def __init__(self, f: BinaryIO, total: int, progress: ImageProgress | None) -> None:
        self.f = f
        self.total = total
        self.done = 0
        self.sha256 = hashlib.sha256()
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.sha256.update(data)
        self.done += len(data)
        if self.progress and data:
            self.progress("reading", self.done, self.total)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _strip_name(path: str) -> str:
    name = os.path.basename(path)
    name = re.sub(r"\.(gz|xz|zst|bz2)$", "", name)
    name = re.sub(r"\.(qcow2|img|raw|vmdk|vdi)$", "", name)
    return name + ".qcow2"


def _claimed_format(path: str) -> str | None:
    name = re.sub(r"\.(gz|xz|zst|bz2)$", "", os.path.basename(path))
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return suffix if suffix in ("qcow2", "vmdk", "vdi") else None


def _refuse_external_files(info: dict[str, object], source: str) -> None:
    """An image must not pull other host files into the copy: a qcow2 ``data-file`` or VMDK
    extents elsewhere would make qemu-img (as root) read them (cf. OSSA-2024-001)."""
    specific = info.get("format-specific")
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    if not isinstance(data, dict):
        return
    if data.get("data-file"):
        raise InvalidInput(
            f"{source} names an external data file ({data['data-file']}): refused",
            code="invalid_image",
        )
    for extent in data.get("extents", []) or []:
        filename = extent.get("filename") if isinstance(extent, dict) else None
        if filename and os.path.realpath(str(filename)) != os.path.realpath(source):
            raise InvalidInput(
                f"{source} is a VMDK whose data lives in other files ({filename}): import a "
                "single-file (monolithic) VMDK",
                code="invalid_image",
            )


def parse_checksum(text: str) -> tuple[str, str]:
    """``sha256:HEX``, ``sha512:HEX`` or a bare hex digest (length tells the algorithm)."""
    algo, _, digest = text.rpartition(":")
    digest = digest.strip().lower()
    if not algo:
        algo = {64: "sha256", 128: "sha512"}.get(len(digest), "")
    if algo not in ("sha256", "sha512") or not re.fullmatch(r"[0-9a-f]+", digest):
        raise InvalidInput(
            f"invalid checksum {text!r}: use sha256:HEX or sha512:HEX", code="invalid_checksum"
        )
    if len(digest) != {"sha256": 64, "sha512": 128}[algo]:
        raise InvalidInput(
            f"invalid checksum {text!r}: wrong length for {algo}", code="invalid_checksum"
        )
    return algo, digest


class ImageService:
    def __init__(
        self,
        host: Host,
        pools: PoolService,
        store: Store,
        work_dir: Path,
        host_uuid: Callable[[], str],
        *,
        build_root: Path | None = None,
        default_pool: tuple[str, Path] | None = None,
    ) -> None:
        self.host = host
        self.pools = pools
        self.store = store
        self.work_dir = work_dir
        self._host_uuid = host_uuid
        # where ``build`` keeps the kernels of built images (a directory per build under it)
        self.build_root = build_root or work_dir.parent
        # virtkit's own pool (name, directory): ``build`` makes it when it is missing
        self.default_pool = default_pool

    @contextlib.contextmanager
    def _work_file(self, suffix: str) -> Iterator[Path]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="import-", suffix=suffix, dir=self.work_dir)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def _read(
        self, path: str, kind: str | None, out: Path, algo: str, progress: ImageProgress | None
    ) -> str:
        """Copy (decompressing) ``path`` to ``out``; returns the hex digest of ``path``."""
        total = os.path.getsize(path)
        with open(path, "rb") as raw:
            reader = _HashingReader(raw, total, progress)
            if algo != "sha256":
                reader.sha256 = hashlib.new(algo)
            with _decompressor(kind, reader) as source, open(out, "wb") as target:  # type: ignore[arg-type]
                while chunk := _read_archive(source, path, kind):
                    try:
                        target.write(chunk)
                    except OSError as exc:
                        raise BackendError(
                            f"cannot write the work file {out}: {exc.strerror}",
                            code="work_file_failed",
                        ) from None
            while reader.read(_CHUNK):  # hash any trailing bytes the decompressor left
                pass
        return reader.sha256.hexdigest()

    def _hash_only(self, path: str, algo: str, progress: ImageProgress | None) -> str:
        total = os.path.getsize(path)
        with open(path, "rb") as raw:
            reader = _HashingReader(raw, total, progress)
            reader.sha256 = hashlib.new(algo)
            while reader.read(_CHUNK):
                pass
        return reader.sha256.hexdigest()

    def import_image(
        self,
        path: str,
        pool: str,
        name: str | None = None,
        *,
        checksum: str | None = None,
        progress: ImageProgress | None = None,
        via_stream: bool | None = None,
    ) -> ImageInfo:
        """Import a file on this machine. On a local host (or a local ``dir`` pool) it is
        converted straight into the new volume; otherwise (``via_stream``) it is converted here
        and sent through a libvirt stream, so that remote hosts and other pool types work too."""
        check_local_file(path, "image")
        name = validate_volume_name(name or _strip_name(path))
        pool_info = self.pools.get_pool(pool)
        if via_stream is None:
            via_stream = not (self.host.is_local and pool_info.type == "dir" and pool_info.path)
        if any(v.name == name for v in self.pools.list_volumes(pool)):
            raise AlreadyExists(
                f"a volume named {name!r} exists in pool {pool!r}", code="volume_exists"
            )
        algo, expected = parse_checksum(checksum) if checksum else ("sha256", None)
        kind = detect_compression(path)
        with self._work_file(".img") as work:
            if kind is not None:
                digest = self._read(path, kind, work, algo, progress)
                source = str(work)
            else:
                digest = self._hash_only(path, algo, progress)
                source = path
            if expected is not None and digest != expected:
                raise InvalidInput(
                    f"checksum mismatch for {path}: expected {algo} {expected}, got {digest}",
                    code="checksum_mismatch",
                )
            sha256 = digest if algo == "sha256" else self._hash_only(path, "sha256", None)
            self._refuse_duplicate(sha256, path)
            info = qemu_img_info(source)
            fmt = str(info.get("format"))
            claimed = _claimed_format(path)
            if claimed and claimed != fmt:
                raise InvalidInput(
                    f"{path} is named .{claimed} but is not a {claimed} image "
                    f"(qemu-img sees {fmt})",
                    code="image_format_mismatch",
                )
            if fmt not in FORMATS:
                raise InvalidInput(
                    f"{path}: unsupported image format {fmt!r} (supported: {', '.join(FORMATS)})",
                    code="invalid_image",
                )
            if info.get("backing-filename"):
                raise InvalidInput(
                    f"{path} has a backing file ({info['backing-filename']}): "
                    "import a standalone image",
                    code="invalid_image",
                )
            _refuse_external_files(info, source)
            size = int(str(info.get("virtual-size", 0)))
            with Transaction(f"recording {name}") as tx:
                target = self._into_pool(source, fmt, pool, name, size, progress, via_stream)
                tx.on_rollback(
                    f"delete volume {target}", lambda: self.host.storage.delete_volume(pool, name)
                )
                self.store.add_image(self._host_uuid(), pool, name, target, sha256, path)
        return self.get(pool, name)

    def _refuse_duplicate(self, sha256: str, path: str) -> None:
        row = self.store.image_by_sha(self._host_uuid(), sha256)
        if row is None:
            return
        if self.host.storage.volume_xml_by_path(row["path"]) is None:
            self.store.forget_image(self._host_uuid(), row["path"])  # deleted since
            return
        raise AlreadyExists(
            f"{path} was imported already, as {row['pool']}/{row['name']} "
            f"(sha256 {sha256[:12]}...)",
            code="image_exists",
        )

    def _into_pool(
        self,
        source: str,
        fmt: str,
        pool: str,
        name: str,
        size: int,
        progress: ImageProgress | None,
        via_stream: bool,
    ) -> str:
        """A new qcow2 volume with the image's content, recorded in the store; its path.

        Locally qemu-img converts straight into the volume libvirt made; otherwise it converts
        into a work file here, which goes to the volume through a libvirt stream."""
        with Transaction(f"importing {name}") as tx, self._work_file(".qcow2") as converted:
            length = 0
            if via_stream:
                converted.unlink()  # qemu-img creates it
                self._qemu_img_convert(source, fmt, str(converted), progress, create=True)
                length = converted.stat().st_size
            volume = self.pools.create_volume(
                pool, VolumeSpec(name=name, size=f"{max(size, length, 1)}b", format="qcow2")
            )
            tx.on_rollback(
                f"delete volume {volume.path}", lambda: self.host.storage.delete_volume(pool, name)
            )
            if via_stream:

                def sent(done: int) -> None:
                    if progress:
                        progress("uploading", done, length)

                with open(converted, "rb") as data:
                    self.host.storage.upload(pool, name, data, length, sent)
            else:
                self._qemu_img_convert(source, fmt, volume.path, progress)
            self.host.storage.refresh_pool(pool)
            return volume.path

    def _qemu_img_convert(
        self,
        source: str,
        fmt: str,
        target: str,
        progress: ImageProgress | None,
        *,
        create: bool = False,
    ) -> None:
        reuse = [] if create else ["-n"]  # -n: write into the volume libvirt made
        cmd = ["qemu-img", "convert", "-p", *reuse, "-f", fmt, "-O", "qcow2", source, target]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        buffer = ""
        while True:
            char = proc.stdout.read(1)
            if not char:
                break
            buffer += char
            if char in "\r\n":
                match = re.search(r"\(([\d.]+)/100%\)", buffer)
                if match and progress:
                    progress("converting", int(float(match.group(1))), 100)
                buffer = ""
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0:
            raise BackendError(f"qemu-img convert failed: {stderr.strip()}", code="convert_failed")

    # -- listing and templates --------------------------------------------------------------

    def get(self, pool: str, name: str) -> ImageInfo:
        volume = self.pools.get_volume(pool, name)
        row = self.store.image(self._host_uuid(), volume.path)
        return ImageInfo(
            pool=pool,
            name=name,
            path=volume.path,
            format=volume.format,
            capacity=volume.capacity,
            allocation=volume.allocation,
            sha256=row["sha256"] if row else None,
            origin=row["origin"] if row else None,
            os=row["os"] if row else None,
            template=bool(row["template"]) if row else False,
            clones=self.pools.clones_of(volume.path),
            boot=json.loads(row["boot"]) if row and row["boot"] else None,
        )

    def build_dir(self, name: str) -> Path:
        """A new directory for a build of image ``name``: one per build, so VMs made from an
        earlier build of the same name keep booting its kernel."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.build_root / "images" / f"{validate_volume_name(name)}-{stamp}"

    def _pool_path(self, pool: str) -> Path | None:
        """The directory to make ``pool`` in when it is missing: virtkit's own pool only."""
        if self.default_pool is not None and pool == self.default_pool[0]:
            return self.default_pool[1]
        return None

    def check_build(
        self,
        name: str,
        pool: str | None = None,
        *,
        suite: str = "bookworm",
        mirror: str | None = None,
        size_gib: int = 2,
    ) -> str:
        """What ``build`` checks before it starts, in a moment: the name, suite, mirror and
        size, root and the tools, that the pool exists (virtkit's own pool is made if missing)
        and has no volume ``name``. Returns the pool (default: virtkit's own)."""
        from virtkit.services import imagebuild

        validate_volume_name(name)
        chosen = pool or (self.default_pool[0] if self.default_pool else None)
        if chosen is None:
            raise InvalidInput("name the pool for the image", code="no_pool")
        imagebuild.check_recipe(suite=suite, mirror=mirror, size_gib=size_gib)
        check = self._pool_path(chosen) is None or self.host.storage.pool_xml(chosen) is not None
        # (list_volumes says NotFound for a pool that is not there, before 80 s of building)
        if check and any(v.name == name for v in self.pools.list_volumes(chosen)):
            raise AlreadyExists(
                f"a volume named {name!r} exists in pool {chosen!r}", code="volume_exists"
            )
        imagebuild.check_tools()
        return chosen

    def build(
        self,
        name: str,
        pool: str | None = None,
        *,
        build_dir: Path | None = None,
        suite: str = "bookworm",
        mirror: str | None = None,
        size_gib: int = 2,
        progress: Callable[[str], None] | None = None,
    ) -> ImageInfo:
        """Build Debian with cloud-init (``imagebuild.build_debian``, into ``build_dir``,
        default: a new ``build_dir(name)``) and make it template ``name`` in ``pool`` (default:
        virtkit's own pool, made if missing) that boots its own kernel (which stays in
        ``build_dir``). Checked before the build (``check_build``); nothing is left on
        failure."""
        from virtkit.services import imagebuild, storage

        pool = self.check_build(name, pool, suite=suite, mirror=mirror, size_gib=size_gib)
        build_dir = build_dir or self.build_dir(name)
        pool_path = self._pool_path(pool)
        built = imagebuild.build_debian(build_dir, suite=suite, mirror=mirror,
                                        size_gib=size_gib, progress=progress)  # fmt: skip
        with Transaction(f"making template {name} of the image built in {build_dir}") as tx:
            tx.on_rollback(f"remove {build_dir}", functools.partial(shutil.rmtree, build_dir, True))
            if pool_path is not None and storage.ensure_pool(self.host, pool, pool_path):
                tx.on_rollback(f"remove storage pool {pool}",
                               functools.partial(self.host.storage.remove_pool, pool))  # fmt: skip
            self.import_image(str(built.disk), pool, name)
            tx.on_rollback(f"delete volume {pool}/{name}",
                           functools.partial(self.pools.delete_volume, pool, name))  # fmt: skip
            self.set_template(pool, name, os_name=f"debian-{suite}")
            info = self.set_boot(pool, name, str(built.kernel), str(built.initrd), built.cmdline)
        built.disk.unlink()  # imported: the pool holds it now
        return info

    def set_boot(
        self, pool: str, name: str, kernel: str, initrd: str | None, cmdline: str
    ) -> ImageInfo:
        """Record how VMs boot this image (direct kernel boot: it has no boot loader)."""
        volume = self.pools.get_volume(pool, name)
        if self.store.image(self._host_uuid(), volume.path) is None:
            raise NotFound(f"{pool}/{name} is not an imported image", code="image_not_found")
        boot = {"kernel": kernel, "cmdline": cmdline} | ({"initrd": initrd} if initrd else {})
        self.store.set_boot(self._host_uuid(), volume.path, json.dumps(boot))
        return self.get(pool, name)

    def list(self, *, templates_only: bool = False) -> list[ImageInfo]:
        infos = []
        for row in self.store.images(self._host_uuid(), templates_only=templates_only):
            try:
                infos.append(self.get(row["pool"], row["name"]))
            except (NotFound, InvalidState):
                continue  # deleted behind virtkit's back, or its pool is stopped
        return infos

    def set_template(
        self, pool: str, name: str, *, os_name: str | None = None, on: bool = True
    ) -> ImageInfo:
        """Mark a volume as a template: a read-only base for linked clones."""
        volume = self.pools.get_volume(pool, name)
        if on and volume.used_by:
            raise InvalidInput(
                f"{name!r} is a disk of VM(s) {', '.join(volume.used_by)}: a "
                "template must not be written to",
                code="volume_in_use",
            )
        clones = [] if on else self.pools.clones_of(volume.path)
        if clones:
            raise InUse(
                f"{name!r} is the backing file of {', '.join(clones)}: it stays a template "
                "while linked clones build on it",
                code="volume_has_clones",
            )
        uuid = self._host_uuid()
        if self.store.image(uuid, volume.path) is None:
            digest = ""
            if self.host.is_local:
                try:
                    digest = self._hash_only(volume.path, "sha256", None)
                except OSError as exc:
                    log.info("cannot hash %s: %s", volume.path, exc)
            self.store.add_image(uuid, pool, name, volume.path, digest, "existing volume")
        self.store.mark_template(uuid, volume.path, os_name, on)
        return self.get(pool, name)

    def is_template(self, path: str) -> bool:
        return self.pools.is_template(path)

    def resolve_template(self, ref: str, default_pool: str) -> ImageInfo:
        """``pool/name`` or ``name`` (in the default pool) of a template."""
        pool, _, name = ref.rpartition("/")
        info = self.get(pool or default_pool, name)
        if not info.template:
            raise InvalidInput(
                f"{ref!r} is not a template (mark it: virtkit image template "
                f"{name} --pool {info.pool})",
                code="not_a_template",
            )
        return info
