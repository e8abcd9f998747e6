"""Where KVM verdicts are kept: on disk across processes, in memory within one.

A verdict is stored under a full key (the host's UUID, QEMU's and libvirt's versions, and for a
local host the kernel, ``/dev/kvm`` and QEMU's user) and, for local hosts, also under a cheap
local fingerprint that needs no slow libvirt call: the URI, libvirt's version, the kernel, the
device node, the emulator binaries and the daemon's config files. A lookup by the local
fingerprint answers without asking libvirt for its capabilities, which matters because
libvirt 9 re-probes every QEMU binary (about 4 s each) on each call while its QEMU user is
denied ``/dev/kvm``. For that state the entry also keeps a copy of what libvirt answered
(capabilities, hypervisor version), served instead of asking again until the fingerprint
changes.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_NAME = "kvm-verdicts.json"
# Files whose change can change a local verdict or libvirt's answers.
WATCHED_FILES = ("/etc/libvirt/qemu.conf", "/etc/libvirt/libvirtd.conf")
EMULATORS = "/usr/bin/qemu-system-*"


@dataclass(frozen=True)
class KvmVerdict:
    usable: bool
    reason: str
    checked_at: float
    cached: bool = False
    # Only a firm verdict (facts that decide it, the kernel booted, it ran and printed nothing,
    # QEMU refused KVM) is cached on disk; a probe that could not run (no kernel, a dropped
    # connection, a busy console) is tried again by the next process, not by this one.
    firm: bool = True
    fix: str | None = None
    # usable | permission | no-device | no-kvm-type | silent | refused | unverified | failed
    kind: str = "usable"

    @property
    def libvirt_reprobes(self) -> bool:
        """libvirt re-probes QEMU on every call in this state (see the module docstring)."""
        return self.kind == "permission"


def _file_stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:-"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def local_fingerprint(uri: str, libvirt_version: str, device_stamp: str) -> str:
    """Changes with anything local that can change a verdict; costs microseconds."""
    files = sorted(glob.glob(EMULATORS)) + list(WATCHED_FILES)
    parts = [uri, libvirt_version, os.uname().release, device_stamp]
    return "|".join(parts + [_file_stamp(f) for f in files])


def _encode_answers(answers: dict[tuple[Any, ...], str]) -> list[list[Any]]:
    return [[list(key), value] for key, value in answers.items()]


def _decode_answers(data: object) -> dict[tuple[Any, ...], str]:
    out: dict[tuple[Any, ...], str] = {}
    if isinstance(data, list):
        for item in data:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], str):
                out[tuple(item[0])] = item[1]
    return out


class VerdictStore:
    """The JSON file of verdicts in a cache directory (None: keep nothing on disk)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.path = None if cache_dir is None else cache_dir / CACHE_NAME

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("cannot cache the KVM verdict in %s: %s", self.path, exc)

    @staticmethod
    def _verdict(entry: dict[str, Any]) -> KvmVerdict:
        return KvmVerdict(
            bool(entry["usable"]),
            str(entry["reason"]),
            float(entry["checked_at"]),
            cached=True,
            fix=str(entry["fix"]) if entry.get("fix") else None,
            kind=str(entry.get("kind") or ("usable" if entry["usable"] else "failed")),
        )

    def by_key(self, key: str) -> KvmVerdict | None:
        entry = self._load().get(key)
        return None if entry is None else self._verdict(entry)

    def by_local(self, local: str) -> tuple[KvmVerdict, dict[tuple[Any, ...], str]] | None:
        """The verdict recorded under this local fingerprint, and its kept libvirt answers."""
        for entry in self._load().values():
            if entry.get("local") == local:
                return self._verdict(entry), _decode_answers(entry.get("answers"))
        return None

    def save(
        self,
        key: str,
        verdict: KvmVerdict,
        *,
        local: str | None = None,
        answers: dict[tuple[Any, ...], str] | None = None,
    ) -> None:
        data = self._load()
        entry: dict[str, Any] = {
            k: v for k, v in asdict(verdict).items() if k not in ("cached", "firm")
        }
        if local is not None:
            # One entry per local fingerprint: an older entry for the same one is stale.
            data = {k: v for k, v in data.items() if v.get("local") != local}
            entry["local"] = local
        if answers:
            entry["answers"] = _encode_answers(answers)
        data[key] = entry
        self._write(data)

    def remember_local(self, key: str, local: str) -> None:
        """A verdict found by its full key is found by the local fingerprint next time."""
        data = self._load()
        if key in data and data[key].get("local") != local:
            data = {k: v for k, v in data.items() if k == key or v.get("local") != local}
            data[key]["local"] = local
            self._write(data)

    def add_answers(self, local: str, answers: dict[tuple[Any, ...], str]) -> None:
        data = self._load()
        for entry in data.values():
            if entry.get("local") == local:
                kept = _decode_answers(entry.get("answers"))
                kept.update(answers)
                entry["answers"] = _encode_answers(kept)
                self._write(data)
                return


# One process asks at most once, whatever the outcome: key or local fingerprint -> verdict.
process_verdicts: dict[str, KvmVerdict] = {}
