"""Deleting a VM: undefine it, and with ``remove_storage`` remove what virtkit made for it (its
own disks and seed, its console log); attached images are never removed."""

from __future__ import annotations

import builtins
import logging
from pathlib import Path

from virtkit.backend.host import Host
from virtkit.errors import InvalidState, VirtkitError
from virtkit.services import storage
from virtkit.services.pools import PoolService
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmstate import describe, lookup, state_code
from virtkit.specs import DeleteResult
from virtkit.xml.domain import Domain

log = logging.getLogger(__name__)


class VMDeleter:
    def __init__(self, host: Host, pools: PoolService | None, files: VMFiles) -> None:
        self.host = host
        self.pools = pools
        self.files = files

    def delete(
        self, name: str, *, force: bool = False, remove_storage: bool = False
    ) -> DeleteResult:
        """Undefine a VM. Running VMs only with ``force``; its own disks only with
        ``remove_storage`` (disks virtkit created for it; attached images are never removed)."""
        guest = lookup(self.host, name)
        state = guest.state()[0]
        dom = guest.definition(inactive=True)
        if state.is_active and not force:
            raise InvalidState(
                f"VM {name!r} is {describe(state)}: stop it first, or delete "
                "with --force to power it off",
                code=state_code(state),
            )
        persistent = guest.is_persistent()  # a transient VM is gone once destroyed
        if state.is_active:
            guest.destroy()
        if persistent:
            guest.undefine()
        owned = dom.owned_disk_paths
        attached = [d.source for d in dom.disks if d.source]
        removed: builtins.list[str] = []
        kept: builtins.list[str] = []
        # Its own disks, attached or not (one detached without --remove-storage is still its own).
        doomed: builtins.list[str] = []
        for source in dict.fromkeys([*attached, *owned]):
            if source not in owned:
                kept.append(f"{source} (not created by virtkit for this VM)")
            elif not remove_storage:
                kept.append(f"{source} (kept: no --remove-storage)")
            else:
                doomed.append(source)
        # The VM is gone already: report a disk that will not go, do not stop halfway. A file
        # that its snapshots' overlays build on goes once they have gone: pass after pass.
        while doomed:
            left: dict[str, str] = {}
            for source in doomed:
                why = delete_own_disk(self.host, self.pools, source)
                if why is None:
                    removed.append(source)
                else:
                    left[source] = why
            if len(left) == len(doomed):
                kept += [f"{source} ({why})" for source, why in left.items()]
                break
            doomed = builtins.list(left)
        console_log = self._own_console_log(dom)
        if remove_storage and console_log is not None and console_log.exists():
            try:
                console_log.unlink()
                removed.append(str(console_log))
            except OSError as exc:
                kept.append(f"{console_log} (could not remove: {exc.strerror})")
        log.info("deleted VM %s; removed %s", name, removed or "no storage")
        return DeleteResult(name=name, removed=removed, kept=kept, was_running=state.is_active)

    def _own_console_log(self, dom: Domain) -> Path | None:
        """The console log file virtkit named for this VM, if it is on this host."""
        expected = self.files.serial_log(dom.name) if dom.name else None
        if not self.host.is_local or expected is None:
            return None
        for serial in dom.serials:
            if serial.log is not None and serial.log.file == str(expected):
                return expected
        return None

    def storage_to_remove(self, name: str) -> builtins.list[str]:
        """What ``delete --remove-storage`` would remove, for a confirmation prompt."""
        dom = lookup(self.host, name).definition(inactive=True)
        console_log = self._own_console_log(dom)
        extra = [str(console_log)] if console_log is not None and console_log.exists() else []
        return dom.owned_disk_paths + extra


def delete_own_disk(host: Host, pools: PoolService | None, path: str) -> str | None:
    """Delete one of a VM's own disks; None when done, else why it stays."""
    if pools is not None:
        return pools.delete_owned_disk(path)
    try:
        return None if storage.delete_disk(host, path) else "already gone"
    except VirtkitError as exc:
        return f"could not remove: {exc.message}"
