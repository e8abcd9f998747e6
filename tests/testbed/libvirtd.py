"""A private libvirtd for tests: its own mount namespace, state directories and socket.

It never touches a libvirtd the machine already runs: ``/etc/libvirt``, ``/run/libvirt``,
``/var/lib/libvirt``, ``/var/cache/libvirt`` and ``/var/log/libvirt`` are bind-mounted from a
private directory inside a private mount namespace (``unshare --mount --propagation private``),
and clients reach it over ``qemu+unix:///system?socket=...``. QEMU runs as root without virtlogd,
cgroups or namespaces (settings from TESTBED.md). The daemon is this object's child: tests may
kill and restart it by its PID, and nothing else is ever killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

BIND_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}

LIBVIRTD_CONF = """\
unix_sock_dir = "{sock_dir}"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tcp = {listen_tcp}
listen_tls = 0
{listen_addr}auth_tcp = "none"
host_uuid = "{host_uuid}"
log_outputs = "3:file:{log_file}"
"""

QEMU_CONF = """\
user = "{qemu_user}"
group = "{qemu_group}"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""


def _find_libvirtd() -> str:
    for path in ("/usr/sbin/libvirtd", "/usr/bin/libvirtd"):
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("libvirtd")
    if not found:
        raise RuntimeError("libvirtd is not installed (apt-get install libvirt-daemon-system)")
    return found


class PrivateLibvirtd:
    """Start, kill and restart one private libvirtd. Use as a context manager."""

    def __init__(
        self,
        base: Path | None = None,
        name: str = "vktest",
        netns: str | None = None,
        listen_addr: str | None = None,
        host_uuid: str | None = None,
        hostname: str | None = None,
        qemu_user: str = "root",
    ) -> None:
        """``netns``: run inside this network namespace (a test host, see hosts.py);
        ``listen_addr``: also listen for ``qemu+tcp://`` there (no authentication: tests only)."""
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix=f"{name}-libvirtd-"))
        self.netns = netns
        self.listen_addr = listen_addr
        self.sock_dir = self.base / "sock"
        self.shared = self.base / "shared"  # visible under the same path in both namespaces
        self.host_uuid = host_uuid or str(uuid.uuid4())
        self.hostname = hostname
        # Guests run as root unless a test needs libvirt's usual unprivileged QEMU user.
        self.qemu_user = qemu_user
        self.proc: subprocess.Popen[bytes] | None = None
        self._prepare()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.sock_dir}/libvirt-sock"

    def _prepare(self) -> None:
        for sub in BIND_DIRS:
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        for sub in (
            "sock",
            "shared",
            "lib/images",
            "lib/boot",  # virt-install's scratch pool for kernels and seeds
            "lib/qemu",
            "run/qemu",
            "log/qemu",
            "cache/qemu",
        ):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        etc = self.base / "etc"
        (etc / "libvirtd.conf").write_text(
            LIBVIRTD_CONF.format(
                sock_dir=self.sock_dir,
                host_uuid=self.host_uuid,
                log_file=self.base / "libvirtd-internal.log",
                listen_tcp=1 if self.listen_addr else 0,
                listen_addr=f'listen_addr = "{self.listen_addr}"\n' if self.listen_addr else "",
            )
        )
        qemu_group = "root" if self.qemu_user == "root" else self.qemu_user
        qemu_conf = QEMU_CONF.format(qemu_user=self.qemu_user, qemu_group=qemu_group)
        if self.listen_addr:
            qemu_conf += (
                f'migration_address = "{self.listen_addr}"\nmigration_host = "{self.listen_addr}"\n'
            )
        (etc / "qemu.conf").write_text(qemu_conf)
        for conf in ("virtlogd.conf", "virtlockd.conf", "libvirt.conf", "qemu-lockd.conf"):
            source = Path("/etc/libvirt") / conf
            if source.exists():
                shutil.copy(source, etc / conf)

    def start(self, timeout: float = 30.0) -> None:
        binds = " && ".join(
            f"mount --bind {self.base / sub} {target}" for sub, target in BIND_DIRS.items()
        )
        # its own UTS namespace: a host name of its own when given
        named = f"hostname {self.hostname}; " if self.hostname else ""
        script = (
            f"set -e; {named}{binds}; exec {_find_libvirtd()} "
            f"--config {self.base}/etc/libvirtd.conf --pid-file {self.base}/libvirtd.pid"
            + (" --listen" if self.listen_addr else "")
        )
        # ip netns exec and unshare exec what follows: the Popen PID stays libvirtd's own
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        log = open(self.base / "libvirtd.log", "ab")  # noqa: SIM115 - owned by the child
        # unshare execs sh, which execs libvirtd: the Popen PID is libvirtd's own.
        self.proc = subprocess.Popen(
            [
                *prefix,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"private libvirtd exited with {self.proc.returncode}: "
                    + (self.base / "libvirtd.log").read_text()[-2000:]
                )
            if (self.sock_dir / "libvirt-sock").exists():
                try:
                    conn = libvirt.open(self.uri)
                    conn.close()
                    return
                except libvirt.libvirtError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"private libvirtd did not answer within {timeout} s")

    def kill(self) -> None:
        """Kill the daemon (SIGKILL, as a crash would); its guests keep running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        sock = self.sock_dir / "libvirt-sock"
        if sock.exists():
            sock.unlink()

    def stop(self) -> None:
        """Stop every guest this daemon runs, then the daemon itself."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError:
                conn = None
            if conn is not None:
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    # one gone meanwhile must not keep the others running
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                conn.close()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def cleanup(self) -> None:
        try:
            if self.proc is None and any((self.base / "run" / "qemu").glob("*.pid")):
                self.start()  # killed while guests ran: bring it back so it can stop them
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivateLibvirtd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
