"""``qemu-img`` on the local host: info, and the overlay, commit and rebase steps of snapshots."""

from __future__ import annotations

import json
import subprocess

from virtkit.errors import BackendError, InvalidInput, Unsupported

INFO_TIMEOUT = 120.0


def qemu_img_info(
    path: str, *, fmt: str | None = None, force_share: bool = False
) -> dict[str, object]:
    """What ``qemu-img info`` says of one image (never its backing chain: without
    ``--backing-chain`` qemu-img opens neither the backing file nor a qcow2 data file).
    ``fmt`` reads it as that format instead of probing; ``force_share`` (``-U``) reads an image
    a running VM holds."""
    cmd = ["qemu-img", "info", "--output", "json"]
    if fmt is not None:
        cmd += ["-f", fmt]
    if force_share:
        cmd.append("-U")
    try:
        out = subprocess.run(
            [*cmd, path], capture_output=True, text=True, check=True, timeout=INFO_TIMEOUT
        )
    except FileNotFoundError:
        raise Unsupported("qemu-img is not installed (apt-get install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"qemu-img info {path} did not answer in {INFO_TIMEOUT:g} s") from None
    except subprocess.CalledProcessError as exc:
        raise InvalidInput(
            f"{path} is not a disk image qemu-img can read: {exc.stderr.strip()}",
            code="invalid_image",
        ) from None
    try:
        info = json.loads(out.stdout)
    except ValueError:
        raise BackendError(f"qemu-img info {path} gave no JSON") from None
    if not isinstance(info, dict):
        raise BackendError(f"qemu-img info {path} gave no JSON object")
    return info


def _run(args: list[str], what: str, timeout: float) -> None:
    try:
        subprocess.run(
            ["qemu-img", *args], capture_output=True, text=True, check=True, timeout=timeout
        )
    except FileNotFoundError:
        raise Unsupported("qemu-img is not installed (apt-get install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} did not finish in {timeout:g} s") from None
    except subprocess.CalledProcessError as exc:
        raise BackendError(f"{what} failed: {exc.stderr.strip()}") from None


def create_overlay(path: str, backing: str, backing_format: str) -> None:
    """A new empty qcow2 image at ``path`` whose reads fall through to ``backing``."""
    _run(
        ["create", "-q", "-f", "qcow2", "-b", backing, "-F", backing_format, path],
        f"creating the overlay {path}",
        INFO_TIMEOUT,
    )


def commit(top: str, base: str, *, timeout: float = 3600.0) -> None:
    """Write ``top``'s data down into ``base`` (a file below it); ``top`` is left as it was
    (``-d``), so its removal is the caller's choice."""
    _run(
        ["commit", "-q", "-d", "-f", "qcow2", "-b", base, top],
        f"merging {top} into {base}",
        timeout,
    )


def rebase_unsafe(path: str, backing: str, backing_format: str) -> None:
    """Point ``path``'s header at ``backing`` without copying data: only right when
    ``backing`` reads the same as the file it replaces (after a commit into it)."""
    _run(
        ["rebase", "-q", "-u", "-f", "qcow2", "-b", backing, "-F", backing_format, path],
        f"pointing {path} at {backing}",
        INFO_TIMEOUT,
    )


def flatten(path: str, *, timeout: float = 3600.0) -> None:
    """Copy every backing file's data into ``path`` and drop its backing file."""
    _run(["rebase", "-q", "-f", "qcow2", "-b", "", path], f"flattening {path}", timeout)
