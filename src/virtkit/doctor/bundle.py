"""``virtkit diag bundle``: one tarball, in the style of sosreport, with what a person helping
with a problem asks for first: host facts and versions, the doctor's reports, the domain,
network and pool XML, libvirt's and QEMU's logs (their tails), virtkit's tasks and audit log,
and the kernel log; ``MANIFEST.json`` says where each file came from, whether it was cut and
how many secrets were hidden in it.

Every file passes through :func:`virtkit.doctor.redact.redact` on its way in (``_Bundle.add``
is the only way in), the manifest too. One part that cannot be collected is an error in the
manifest, never the end of the bundle. The tarball is written to a temporary file beside its
destination (mode 0600) and renamed into place: a failure leaves no file behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import re
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from virtkit._version import __version__
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.doctor.redact import redact
from virtkit.errors import AlreadyExists, InvalidInput, NotFound, VirtkitError
from virtkit.services.store import Store
from virtkit.specs.common import validate_name
from virtkit.specs.diag import DiagBundle
from virtkit.specs.doctor import DoctorReport

log = logging.getLogger(__name__)

FILE_CAP = 1024 * 1024  # bytes of one file kept: its tail
TOTAL_CAP = 64 * 1024 * 1024  # bytes of all files together; files past it are left out
LIBVIRTD_LOG = Path("/var/log/libvirt/libvirtd.log")
TASKS_MAX = 200  # newest tasks kept, each with the last TASK_LOG_LINES lines of its log
TASK_LOG_LINES = 200
AUDIT_MAX = 1000
MARKS = {"ok": "ok", "info": "info", "warning": "WARN", "error": "FAIL"}


def tail(data: bytes, cap: int) -> tuple[bytes, bool]:
    """The last ``cap`` bytes of ``data`` at most, starting at a whole line; and whether it
    was cut. A partial first line could be the second half of "password=...": it goes."""
    if len(data) <= cap:
        return data, False
    start = len(data) - cap
    if data[start - 1 : start] != b"\n":
        newline = data.find(b"\n", start)
        start = len(data) if newline < 0 else newline + 1
    return data[start:], True


def read_tail(path: Path, cap: int) -> tuple[bytes, int, bool]:
    """The tail of a file (at most ``cap`` bytes, whole lines), its size, whether it was cut."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - cap - 1))  # one byte more: a cut exactly at a line start is seen
        data = f.read()
    if size <= cap:
        return data, size, False
    return tail(data, cap)[0], size, True


def report_text(report: DoctorReport) -> str:
    """A doctor report as ``virtkit doctor --all`` prints it."""
    lines = []
    for item in report.findings:
        severity = str(item.severity)
        lines.append(f"[{MARKS[severity]:>4}] {item.subject}: {item.summary}")
        if severity != "ok":
            if item.explanation:
                lines.append(f"       why: {item.explanation}")
            if item.fix:
                lines.append(f"       fix: {item.fix}")
    counts = Counter(str(f.severity) for f in report.findings)
    lines.append(
        f"{report.subject} ({report.uri}): {counts['error']} errors, {counts['warning']} "
        f"warnings, {counts['info']} notes, {counts['ok']} ok"
    )
    return "\n".join(lines) + "\n"


@dataclass
class _Member:
    path: str
    data: bytes
    source: str
    truncated: bool
    original_size: int
    redacted: dict[str, int]


@dataclass
class _Bundle:
    """The files of a bundle as they are collected, each redacted and capped on the way in."""

    file_cap: int
    total_cap: int
    members: list[_Member] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    total: int = 0

    def add(self, path: str, content: str | bytes, source: str, *, size: int | None = None,
            truncated: bool = False) -> None:  # fmt: skip
        """The one way into the bundle: ``content`` redacted, then cut to the caps."""
        raw = content.encode() if isinstance(content, str) else content
        original_size = size if size is not None else len(raw)
        raw, cut = tail(raw, self.file_cap)
        text, counts = redact(raw.decode(errors="replace"))
        data = text.encode()
        if self.total + len(data) > self.total_cap:
            self.skipped.append(f"{path}: the bundle's total cap ({self.total_cap} bytes)")
            return
        self.total += len(data)
        self.members.append(_Member(path, data, source, truncated or cut, original_size, counts))

    def add_json(self, path: str, value: Any, source: str) -> None:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        self.add(path, json.dumps(value, indent=2, default=str) + "\n", source)

    def add_file(self, path: str, file: Path) -> None:
        """The tail of a file on this machine; an unreadable one is an error in the manifest."""
        try:
            data, size, cut = read_tail(file, self.file_cap)
        except OSError as exc:
            self.error(f"{file}", exc)
            return
        self.add(path, data, str(file), size=size, truncated=cut)

    def error(self, what: str, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, VirtkitError) else f"{type(exc).__name__}: {exc}"
        self.errors.append(redact(f"{what}: {message}")[0])

    def step(self, what: str, collect: Callable[..., object], *args: Any) -> None:
        """Run one collection step, ``collect(*args)``; its failure is noted and the bundle
        goes on."""
        try:
            collect(*args)
        except VirtkitError as exc:
            self.error(what, exc)
        except Exception as exc:  # a bug in one step must not lose the others' files
            log.exception("diag bundle: collecting %s failed", what)
            self.error(what, exc)

    def manifest(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            **meta,
            "caps": {"file_bytes": self.file_cap, "total_bytes": self.total_cap},
            "files": [
                {
                    "path": m.path,
                    "size": len(m.data),
                    "source": m.source,
                    "original_size": m.original_size,
                    "truncated": m.truncated,
                    "redacted": m.redacted,
                }
                for m in self.members
            ],
            "skipped": self.skipped,
            "errors": self.errors,
            "note": "MANIFEST.json itself is not listed; every file, this one too, passed "
            "through the redaction (counts only, never the values).",
        }


def _safe(name: str) -> str:
    """A member name from a libvirt object's name: no '/', no '..' tricks."""
    safe = re.sub(r"[^\w.+-]", "_", name)
    return re.sub(r"^\.", "_", safe) or "_"  # "..", ".x": never a way out of the bundle's top


class DiagService:
    """Makes diagnostics bundles of one host (``Client.diag``)."""

    def __init__(
        self,
        host: Host,
        *,
        host_info: Callable[[], BaseModel],
        host_report: Callable[[], DoctorReport],
        vm_report: Callable[[str], DoctorReport],
        seed_view: Callable[[str], BaseModel],
        store: Store,
        qemu_log_dir: Path,
        console_log_dir: Path,
        libvirtd_log: Path = LIBVIRTD_LOG,
        file_cap: int = FILE_CAP,
        total_cap: int = TOTAL_CAP,
    ) -> None:
        self.host = host
        self.host_info = host_info
        self.host_report = host_report
        self.vm_report = vm_report
        self.seed_view = seed_view
        self.store = store
        self.qemu_log_dir = qemu_log_dir
        self.console_log_dir = console_log_dir
        self.libvirtd_log = libvirtd_log
        self.file_cap = file_cap
        self.total_cap = total_cap

    def bundle(
        self,
        vms: Sequence[str] = (),
        *,
        all_vms: bool = False,
        output: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> DiagBundle:
        """Collect and write a bundle. ``vms`` (or every VM with ``all_vms``) are examined in
        full: ``doctor vm``, their cloud-init seed (secrets hidden), their QEMU and console
        logs; every VM's domain XML is included anyway."""
        say = progress or (lambda _line: None)
        for name in vms:
            validate_name(name)
        names = [g.name for g in self.host.list_guests()]
        missing = [n for n in vms if n not in names]
        if missing:
            raise NotFound(f"no VM {', '.join(map(repr, missing))}", code="vm_not_found")
        focus = sorted(names) if all_vms else list(dict.fromkeys(vms))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        top = f"virtkit-diag-{_safe(self.host.hostname())}-{stamp}"
        target = (output or Path.cwd() / f"{top}.tar.gz").absolute()
        if target.exists():
            raise AlreadyExists(f"{target} exists: name another file (-o)", code="file_exists")
        if not target.parent.is_dir():
            raise InvalidInput(f"no directory {target.parent}", code="no_such_directory")

        b = _Bundle(self.file_cap, self.total_cap)
        say("collecting host facts and versions")
        b.step("host info", lambda: b.add_json("host/info.json", self.host_info(), "host info"))
        b.step("versions", lambda: b.add_json("host/versions.json", self._versions(), "versions"))
        b.step("capabilities", self._capabilities, b)
        say("running doctor (host)")
        b.step("doctor", lambda: self._doctor(b, "host/doctor", self.host_report, "doctor"))
        say("collecting domain, network and pool XML")
        b.step("domains", lambda: self._domains(b))
        b.step("networks", lambda: self._networks(b))
        b.step("pools", lambda: self._pools(b))
        for name in focus:
            say(f"examining VM {name}")
            base = f"vms/{_safe(name)}"
            b.step(f"doctor vm {name}", self._doctor, b, f"{base}/doctor",
                   partial(self.vm_report, name), f"doctor vm {name}")  # fmt: skip
            b.step(f"cloud-init of {name}", self._seed, b, name, base)
        say("collecting virtkit's tasks and audit log")
        b.step("tasks", lambda: self._tasks(b))
        b.step("audit log", lambda: self._audit(b))
        if self.host.is_local:
            say("collecting logs")
            b.step("logs", lambda: self._logs(b, names, focus))
            b.step("dmesg", lambda: self._dmesg(b))
        else:
            b.skipped.append("logs and dmesg: the host is remote (its files are not here)")
        meta = {
            "format": "virtkit-diag/1",
            "created": stamp,
            "virtkit_version": __version__,
            "uri": self.host.uri,
            "vms": focus,
            "defined_vms": sorted(names),
        }
        manifest, _counts = redact(json.dumps(b.manifest(meta), indent=2) + "\n")
        say("writing the tarball")
        size, count = _write(target, top, b.members, manifest.encode())
        totals: Counter[str] = Counter()
        for member in b.members:
            totals.update(member.redacted)
        log.info("diag bundle %s: %d files, %d bytes", target, count, size)
        return DiagBundle(
            path=str(target),
            size=size,
            files=count,
            vms=focus,
            truncated=[m.path for m in b.members if m.truncated],
            skipped=b.skipped,
            redactions=dict(sorted(totals.items())),
            errors=b.errors,
        )

    # -- the parts -------------------------------------------------------------------------

    def _versions(self) -> dict[str, Any]:
        driver, hv_version = self.host.hypervisor()

        def dist(name: str) -> str | None:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return None

        uname = platform.uname()
        return {
            "virtkit": __version__,
            "python": platform.python_version(),
            "libvirt_python": dist("libvirt-python"),
            "libvirt": self.host.libvirt_version(),
            "hypervisor": driver,
            "hypervisor_version": hv_version,
            "client_kernel": f"{uname.system} {uname.release} {uname.version} {uname.machine}",
        }

    def _capabilities(self, b: _Bundle) -> None:
        b.add("host/capabilities.xml", self.host.capabilities_xml(), "virConnectGetCapabilities")

    @staticmethod
    def _doctor(b: _Bundle, base: str, make: Callable[[], DoctorReport], source: str) -> None:
        report = make()
        data = report.model_dump(mode="json")
        data["worst"] = str(report.worst)
        b.add_json(f"{base}.json", data, source)
        b.add(f"{base}.txt", report_text(report), source)

    def _domains(self, b: _Bundle) -> None:
        # libvirt leaves graphics passwords out without VIR_DOMAIN_XML_SECURE; the redaction
        # would hide them anyway
        for guest in self.host.list_guests():
            name = guest.name
            path = f"vms/{_safe(name)}"
            b.step(f"XML of {name}", self._domain, b, guest, path)

    @staticmethod
    def _domain(b: _Bundle, guest: Guest, path: str) -> None:
        b.add(f"{path}/domain.xml", guest.xml(), "virDomainGetXMLDesc")
        if guest.is_active() and guest.is_persistent():
            b.add(f"{path}/domain-inactive.xml", guest.xml(inactive=True),
                  "virDomainGetXMLDesc(INACTIVE)")  # fmt: skip

    def _networks(self, b: _Bundle) -> None:
        for name in self.host.networks.names():
            b.step(f"network {name}", self._network, b, name)

    def _pools(self, b: _Bundle) -> None:
        for name in self.host.storage.pool_names():
            b.step(f"pool {name}", self._pool, b, name)

    def _network(self, b: _Bundle, name: str) -> None:
        b.add(f"networks/{_safe(name)}.xml", self.host.networks.xml(name), "virNetworkGetXMLDesc")

    def _pool(self, b: _Bundle, name: str) -> None:
        xml = self.host.storage.pool_xml(name) or ""
        b.add(f"pools/{_safe(name)}.xml", xml, "virStoragePoolGetXMLDesc")

    def _seed(self, b: _Bundle, name: str, base: str) -> None:
        try:
            view = self.seed_view(name)
        except NotFound:
            return  # no seed: nothing to show
        b.add_json(f"{base}/cloud-init.json", view, "vm cloud-init (secrets hidden)")

    def _tasks(self, b: _Bundle) -> None:
        if not self.store.path.exists():
            b.skipped.append(f"tasks and audit log: no store at {self.store.path}")
            return
        import virtkit.services.tasks  # noqa: F401 - its tables, made if missing

        # Only the tasks and their logs: the users, tokens and sessions tables never.
        with self.store.db() as db:
            rows = db.execute(
                "SELECT id, kind, target, user, state, percent, phase, created, started, "
                "finished, result, error FROM tasks ORDER BY created DESC LIMIT ?",
                (TASKS_MAX,),
            ).fetchall()
            tasks = []
            for row in rows:
                lines = db.execute(
                    "SELECT at, line FROM task_log WHERE task_id = ? "
                    "ORDER BY at DESC, rowid DESC LIMIT ?",
                    (row["id"], TASK_LOG_LINES),
                ).fetchall()
                task = dict(row)
                for key in ("result", "error"):
                    if task[key]:
                        with contextlib.suppress(ValueError):
                            task[key] = json.loads(task[key])
                task["log"] = [{"at": r["at"], "line": r["line"]} for r in reversed(lines)]
                tasks.append(task)
        b.add_json("virtkit/tasks.json", tasks, f"{self.store.path}: tasks, task_log")

    def _audit(self, b: _Bundle) -> None:
        if not self.store.path.exists():
            return
        from virtkit.services.audit import AuditLog

        entries = AuditLog(self.store).entries(limit=AUDIT_MAX)
        b.add_json(
            "virtkit/audit.json",
            [e.__dict__ for e in entries],
            f"{self.store.path}: audit_log (newest {AUDIT_MAX})",
        )

    def _logs(self, b: _Bundle, names: list[str], focus: list[str]) -> None:
        """QEMU's log of every VM (the named ones first: the total cap leaves out the others'
        first), their serial console logs, libvirtd's log."""
        order = focus + [n for n in sorted(names) if n not in focus]
        for name in order:
            qemu_log = self.qemu_log_dir / f"{name}.log"
            if qemu_log.exists():
                b.add_file(f"logs/qemu/{_safe(name)}.log", qemu_log)
            for console in sorted(self.console_log_dir.glob(f"{glob_escape(name)}-serial*.log")):
                b.add_file(f"logs/console/{_safe(console.name)}", console)
        if self.libvirtd_log.exists():
            b.add_file("logs/libvirtd.log", self.libvirtd_log)
        else:
            b.skipped.append(f"libvirtd's log: no {self.libvirtd_log} (journald? see dmesg)")

    def _dmesg(self, b: _Bundle) -> None:
        try:
            done = subprocess.run(
                ["dmesg", "--ctime"], capture_output=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            b.skipped.append(f"dmesg: {exc}")
            return
        if done.returncode != 0:
            b.skipped.append(f"dmesg: {done.stderr.decode(errors='replace').strip()}")
            return
        b.add("host/dmesg.txt", done.stdout, "dmesg --ctime")


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _write(target: Path, top: str, members: list[_Member], manifest: bytes) -> tuple[int, int]:
    """The tarball, written to a temporary file beside ``target`` and renamed to it (mode 0600);
    nothing is left when it fails. Returns (size, files)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                now = time.time()
                for path, data in [*((m.path, m.data) for m in members),
                                   ("MANIFEST.json", manifest)]:  # fmt: skip
                    info = tarfile.TarInfo(f"{top}/{path}")
                    info.size = len(data)
                    info.mode = 0o600
                    info.mtime = int(now)
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target.stat().st_size, len(members) + 1


__all__ = ["FILE_CAP", "TOTAL_CAP", "DiagService", "read_tail", "report_text", "tail"]
