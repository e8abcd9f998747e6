"""What a seed ISO carries, for people to read (``vm cloud-init``, the API, the web UI), with
its secrets hidden: password hashes and plain passwords, and private keys (the SSH host keys
virtkit pins, or any PEM private key in a script). Whoever may read a VM's details may read
this; the seed itself stays on the host.

Cloud-config (YAML) is parsed and each secret-bearing key replaced; anything else (a shell
script, a MIME multi-part) keeps its text with every PEM private-key block replaced.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from virtkit.cloudinit.seed import read_seed
from virtkit.specs.cloudinit import SeedFile, SeedView

HIDDEN = "(hidden)"
# Keys whose values are secrets wherever they appear in a cloud-config or a ConfigDrive JSON.
_SECRET_KEY = re.compile(
    r"(^|_)(passwd|password|hashed_passwd|plain_text_passwd|private|secret|token)$|_private$",
    re.IGNORECASE,
)
_PEM_PRIVATE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
)
_PASSWORD_LISTS = ("chpasswd.list", "chpasswd.users")
_TEXT_MAX = 256 * 1024  # a seed file larger than this is summarised, not shown


def _hide(value: Any, path: str, hidden: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            pairs = where.endswith(_PASSWORD_LISTS)  # user:password pairs, in any form
            if item and (pairs or (_SECRET_KEY.search(str(key)) and isinstance(item, str))):
                out[key] = HIDDEN
                hidden.append(where)
            else:
                out[key] = _hide(item, where, hidden)
        return out
    if isinstance(value, list):
        return [_hide(item, f"{path}[{i}]", hidden) for i, item in enumerate(value)]
    if isinstance(value, str) and _PEM_PRIVATE.search(value):
        hidden.append(path)
        return HIDDEN
    return value


def _pem_hidden(text: str, path: str, hidden: list[str]) -> str:
    out, count = _PEM_PRIVATE.subn(HIDDEN, text)
    if count:
        hidden.append(f"{path}: {count} private key(s)")
    return out


def _readable(path: str, data: bytes) -> SeedFile:
    if len(data) > _TEXT_MAX:
        return SeedFile(path=path, text=f"({len(data)} bytes, not shown)")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return SeedFile(path=path, text=f"({len(data)} bytes of binary data, not shown)")
    hidden: list[str] = []
    if path.endswith(".json"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return SeedFile(path=path, text=_pem_hidden(text, path, hidden), hidden=hidden)
        shown = json.dumps(_hide(parsed, "", hidden), indent=2)
        return SeedFile(path=path, text=shown, hidden=hidden)
    if text.startswith("#cloud-config") or path.endswith(("meta-data", "network-config")):
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict):
            header = "#cloud-config\n" if text.startswith("#cloud-config") else ""
            body = yaml.safe_dump(_hide(parsed, "", hidden), sort_keys=False)
            return SeedFile(path=path, text=header + body, hidden=hidden)
    return SeedFile(path=path, text=_pem_hidden(text, path, hidden), hidden=hidden)


def describe_seed(data: bytes, source: str) -> SeedView:
    """The files of a seed ISO (``data``), secrets hidden; ``source`` is where it lies."""
    volume_id, files = read_seed(data)
    kind = {"cidata": "nocloud", "config-2": "configdrive"}.get(volume_id.lower(), "unknown")
    order = ("user-data", "openstack/latest/user_data")
    names = sorted(files, key=lambda p: (p not in order, p))
    return SeedView(
        source=source,
        format=kind,
        files=[_readable(p, files[p]) for p in names],
    )
