"""``qemu-img info`` on the local host: the one place virtkit runs it."""

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
