"""SSH keys: the user's public keys (checked; a private key is refused and never stored), their
fingerprints, and the host keys virtkit makes for a guest."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from virtkit.errors import InvalidInput

log = logging.getLogger(__name__)

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")  # fmt: skip
PRIVATE_MARKERS = ("PRIVATE KEY-----", "PuTTY-User-Key-File")
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")  # cloud-init's own default set


@dataclass(frozen=True)
class HostKey:
    """One SSH host key pair made for a guest: ``type`` is ed25519, ecdsa or rsa."""

    type: str
    private: str = field(repr=False)  # OpenSSH private key text; goes into the seed only
    public: str = field()  # "ssh-ed25519 AAAA..." (no comment)


def read_public_key(path: str) -> str:
    """The public key in ``path``, checked. A private key is refused (and never stored)."""
    try:
        text = Path(path).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"cannot read SSH key file {path}: {getattr(exc, 'strerror', None) or exc}",
            code="invalid_ssh_key",
        ) from None
    return check_public_key(text, path)


def check_public_key(text: str, source: str = "SSH key") -> str:
    if any(marker in text for marker in PRIVATE_MARKERS):
        log.warning("%s holds a PRIVATE key: refused, and it was not stored anywhere", source)
        raise InvalidInput(
            f"{source} is a private key, not a public one: give the .pub file (the private key "
            "was not stored)",
            code="ssh_private_key",
        )
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise InvalidInput(f"{source} must hold one public key line", code="invalid_ssh_key")
    parts = lines[0].split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidInput(
            f"{source} is not an SSH public key (expected a line like 'ssh-ed25519 AAAA... "
            "comment')",
            code="invalid_ssh_key",
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{source}: the key data is not base64", code="invalid_ssh_key"
        ) from None
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4 : 4 + length].decode(errors="replace") != parts[0]:
        raise InvalidInput(
            f"{source}: the key data does not match its type {parts[0]}", code="invalid_ssh_key"
        )
    return " ".join(parts)


def key_fingerprint(public: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (``ssh-keygen -l``); "?" if it is
    not one."""
    try:
        blob = base64.b64decode(public.split()[1], validate=True)
    except (IndexError, binascii.Error, ValueError):
        return "?"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
