"""An SSH server of the test's own on 127.0.0.1, so ``qemu+ssh://`` URIs are tested for real:
libvirt's own SSH transport (``nc -U`` to the private daemon's socket on the far side) and
virtkit's ``ssh -W`` relay to a VM's display.

Debian's ``openssh-server`` (with ``libwrap0``, which sshd links) and ``netcat-openbsd`` are
downloaded with ``apt-get download`` and unpacked into the test cache: nothing is installed, no
system service starts, no host key is made in /etc. The sshd is this object's child, listening
on a free loopback port with a host key and an authorized key made for it, and it is stopped by
``stop`` (by its PID, never by name). What sshd's privilege separation needs, the directory
``/run/sshd`` and the system user ``sshd``, is made if it is missing, and removed again then.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("openssh-server", "libwrap0", "netcat-openbsd")
PRIVSEP = Path("/run/sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unpacked(cache: Path) -> Path:
    """The packages' files under ``cache/sshd-root`` (downloaded and unpacked once)."""
    root = cache / "sshd-root"
    if (root / "usr/sbin/sshd").exists() and (root / "bin/nc.openbsd").exists():
        return root
    debs = cache / "sshd-debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    staging = Path(tempfile.mkdtemp(prefix="sshd-root-", dir=cache))
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=120)
    staging.rename(root)
    return root


class TestSshd:
    def __init__(self, cache: Path, workdir: Path) -> None:
        self.root = unpacked(cache)
        self.dir = workdir
        self.port = _free_port()
        self.key = workdir / "client_key"
        self.proc: subprocess.Popen[bytes] | None = None
        self._made_privsep = False
        self._made_user = False

    @property
    def netcat(self) -> str:
        return str(self.root / "bin/nc.openbsd")

    def uri(self, socket_path: str) -> str:
        """A ``qemu+ssh://`` URI to the libvirtd listening on ``socket_path``, through this
        sshd (libvirt's netcat proxy on the far side, which is this machine)."""
        return (
            f"qemu+ssh://root@127.0.0.1:{self.port}/system?socket={socket_path}"
            f"&keyfile={self.key}&no_verify=1&proxy=netcat&netcat={self.netcat}"
        )

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(self.dir / name)], check=True)  # fmt: skip
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.dir / 'host_key'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PidFile none",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        if not PRIVSEP.exists():
            PRIVSEP.mkdir(mode=0o755)
            self._made_privsep = True
        if subprocess.run(["id", "-u", "sshd"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(PRIVSEP),
                            "--shell", "/usr/sbin/nologin", "sshd"], check=True)  # fmt: skip
            self._made_user = True
        libs = [
            str(self.root / "lib/x86_64-linux-gnu"),
            str(self.root / "usr/lib/x86_64-linux-gnu"),
        ]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(libs)}
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 -- closed once it is handed over
        self.proc = subprocess.Popen(
            [str(self.root / "usr/sbin/sshd"), "-D", "-e", "-f", str(config)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("sshd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the sshd this object started; its sessions end with it
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._made_user:
            subprocess.run(["userdel", "sshd"], capture_output=True)
        if self._made_privsep:
            with contextlib.suppress(OSError):
                PRIVSEP.rmdir()

    def __enter__(self) -> TestSshd:
        try:
            self.start()
        except BaseException:
            self.stop()  # what start made so far (the user, /run/sshd, a process) goes again
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
