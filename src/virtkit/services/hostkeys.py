"""SSH host keys for a guest, made on the machine running virtkit with ``ssh-keygen``.

The keys go into the guest's cloud-init seed (``ssh_keys``) and their public halves into the
VM's metadata, so ``vm ssh`` checks the guest's identity from the first connection instead of
trusting whatever answers. One ``ssh-keygen`` per key type, all started at once (RSA takes
0.2-0.7 s here; ed25519 and ECDSA a few milliseconds).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from virtkit.cloudinit import HOST_KEY_TYPES, HostKey
from virtkit.errors import VirtkitError

log = logging.getLogger(__name__)


class PendingHostKeys:
    """Host keys being made: ``ssh-keygen`` runs start now, ``result()`` waits for them."""

    def __init__(self, types: tuple[str, ...] = HOST_KEY_TYPES) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="virtkit-hostkeys-"))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for kind in types:
                self._procs[kind] = subprocess.Popen(
                    ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f",
                     str(self._dir / kind)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
        except OSError as exc:
            self.cancel()
            raise VirtkitError(f"cannot run ssh-keygen: {exc}", code="host_key_failed") from None
        except BaseException:
            self.cancel()
            raise

    def result(self) -> list[HostKey]:
        keys = []
        try:
            for kind, proc in self._procs.items():
                try:
                    _out, err = proc.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    raise VirtkitError(
                        f"ssh-keygen made no {kind} host key within 60 s", code="host_key_failed"
                    ) from None
                if proc.returncode != 0:
                    raise VirtkitError(
                        f"ssh-keygen could not make a {kind} host key: "
                        f"{err.decode(errors='replace').strip()}",
                        code="host_key_failed",
                    )
                private = (self._dir / kind).read_text()
                public = " ".join((self._dir / f"{kind}.pub").read_text().split()[:2])
                keys.append(HostKey(kind, private, public))
        finally:
            self.cancel()
        return keys

    def cancel(self) -> None:
        """Stop what still runs (only the processes started here) and remove the files."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):  # not read when it was stopped early
                if pipe is not None:
                    pipe.close()
        self._procs = {}
        shutil.rmtree(self._dir, ignore_errors=True)


def start() -> PendingHostKeys | None:
    """Host keys of cloud-init's default types, being made; None (and a warning) without
    ``ssh-keygen``: the guest then makes its own and ``vm ssh`` cannot check them."""
    if shutil.which("ssh-keygen") is None:
        log.warning(
            "ssh-keygen not found (apt-get install openssh-client): the guest makes its own "
            "SSH host keys, and 'vm ssh' cannot check them"
        )
        return None
    return PendingHostKeys()
