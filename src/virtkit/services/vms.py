"""VM lifecycle: create, list, show, start, shutdown, stop, reboot, reset, pause, resume, set,
autostart, clone, delete. The CLI and (later) the API call these and nothing else.

``VMService`` is a facade: each use case lives in its own module (``vmviews``, ``vmplan`` and
``vmcreate``, ``vmclone``, ``vmpower``, ``vmset``, ``vmdelete``); a VM's file names and its
storage pool are ``vmfiles``'."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtkit.actionlog import host_name, logged_action
from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.host import Host
from virtkit.errors import Unsupported
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmmeta import MetadataCache, VMMeta
from virtkit.services.vmviews import VMViews
from virtkit.specs import DeleteResult, SeedView, SetResult, VMInfo, VMSpec, VMState, VMSummary

if TYPE_CHECKING:
    from virtkit.services.images import ImageService
    from virtkit.services.pools import PoolService
    from virtkit.services.vmclone import VMCloner
    from virtkit.services.vmcreate import VMCreator
    from virtkit.services.vmdelete import VMDeleter
    from virtkit.services.vmpower import VMPower
    from virtkit.services.vmset import VMSetter

    Provider = Callable[[], PoolService | None] | PoolService | None
    ImageProvider = Callable[[], ImageService | None] | ImageService | None

log = logging.getLogger(__name__)


class VMService:
    """Everything one does to VMs on one host."""

    def __init__(
        self,
        host: Host,
        probe: CapabilityProbe,
        *,
        pools: Provider = None,
        images: ImageProvider = None,
        storage_pool: str = "default",
        storage_pool_path: Path = Path("/var/lib/libvirt/images"),
        console_log_dir: Path | None = Path("/var/log/libvirt/qemu"),
        meta: MetadataCache | None = None,
    ) -> None:
        # pools and images may be given as functions that make them: a listing needs neither,
        # and each use case's module is imported when first used (a fast CLI start).
        self.host = host
        self.probe = probe
        self._pools = pools
        self._images = images
        self.files = VMFiles(storage_pool, storage_pool_path, console_log_dir)
        self._views = VMViews(host, meta)

    @cached_property
    def pools(self) -> PoolService | None:
        return self._pools() if callable(self._pools) else self._pools

    @cached_property
    def images(self) -> ImageService | None:
        return self._images() if callable(self._images) else self._images

    @cached_property
    def _creator(self) -> VMCreator:
        from virtkit.services.vmcreate import VMCreator

        return VMCreator(self.host, self.probe, self.pools, self.images, self.files)

    @cached_property
    def _cloner(self) -> VMCloner:
        from virtkit.services.vmclone import VMCloner

        return VMCloner(self.host, self.pools, self.files)

    @cached_property
    def _power(self) -> VMPower:
        from virtkit.services.vmpower import VMPower

        return VMPower(self.host)

    @cached_property
    def _setter(self) -> VMSetter:
        from virtkit.services.vmset import VMSetter

        return VMSetter(self.host, self.probe)

    @cached_property
    def _deleter(self) -> VMDeleter:
        from virtkit.services.vmdelete import VMDeleter

        return VMDeleter(self.host, self.pools, self.files)

    def _action(self, action: str, name: str) -> AbstractContextManager[dict[str, Any]]:
        """One log record for the action (outcome, duration, VM, host): docs/monitoring.md."""
        return logged_action(log, action, vm=name, host=host_name(self.host.uri))

    @property
    def storage_pool(self) -> str:
        return self.files.pool

    @property
    def storage_pool_path(self) -> Path:
        return self.files.pool_path

    @property
    def console_log_dir(self) -> Path | None:
        return self.files.console_log_dir

    # -- reading ----------------------------------------------------------------------------

    @property
    def meta(self) -> MetadataCache:
        """The copy of virtkit's metadata the listing reads (shared with the metrics scrape)."""
        return self._views.meta

    def list(self, *, refresh: bool = False) -> builtins.list[VMSummary]:
        """Every VM (bulk calls; tags from virtkit's copy, read afresh with ``refresh``)."""
        return self._views.list(refresh=refresh)

    def get(self, name: str) -> VMInfo:
        return self._views.get(name)

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return self._views.xml(name, inactive=inactive)

    def state(self, name: str) -> VMState:
        return self._views.state(name)

    def cloud_init(self, name: str) -> SeedView:
        """What the VM's cloud-init seed carries, its secrets (password hashes, private keys)
        hidden; NotFound ``no_seed`` if it has none."""
        from virtkit.services.vmseed import describe

        if self.pools is None:
            raise Unsupported("reading a seed needs the storage pools service")
        return describe(self.host, self.pools, name)

    # -- creating ---------------------------------------------------------------------------

    def preview_xml(self, spec: VMSpec) -> str:
        """The domain XML ``create`` would define, after the same checks; creates nothing."""
        return self._creator.preview_xml(spec)

    def create(
        self, spec: VMSpec, *, start: bool = False, progress: Callable[[str], None] | None = None
    ) -> VMInfo:
        """Create a VM from a validated spec; on any failure nothing of it remains."""
        with self._action("vm.create", spec.name):
            self._creator.create(spec, start=start, progress=progress)
        return self.get(spec.name)

    def clone(
        self, name: str, new_name: str, *, linked: bool = False, owner: str | None = None
    ) -> VMInfo:
        """A new VM from a shut-off one: every disk copied (or, ``linked``, a qcow2 overlay on
        the source's disk, which must then stay unchanged), new UUID, new MAC addresses. CD-ROMs
        keep their media; the clone owns its new disks."""
        with self._action("vm.clone", new_name) as fields:
            fields["virtkit.source_vm"] = name
            self._cloner.clone(name, new_name, linked=linked, owner=owner)
        return self.get(new_name)

    # -- power ------------------------------------------------------------------------------

    def start(self, name: str, *, paused: bool = False) -> None:
        with self._action("vm.start", name):
            self._power.start(name, paused=paused)

    def wait_for_state(self, name: str, states: tuple[VMState, ...], timeout: float) -> bool:
        return self._power.wait_for_state(name, states, timeout)

    def shutdown(self, name: str, *, timeout: float = 60.0, force: bool = False) -> str:
        """Graceful shutdown (the guest agent when one answers, else ACPI), waiting up to
        ``timeout`` s; with ``force``, power off after that. Returns ``shutdown``, ``forced``
        or ``forced-paused``."""
        with self._action("vm.shutdown", name) as fields:
            how = self._power.shutdown(name, timeout=timeout, force=force)
            fields["virtkit.result"] = how
        return how

    def stop(self, name: str) -> None:
        """Power off at once (like pulling the plug)."""
        with self._action("vm.stop", name):
            self._power.stop(name)

    def reboot(self, name: str) -> None:
        with self._action("vm.reboot", name):
            self._power.reboot(name)

    def reset(self, name: str) -> None:
        with self._action("vm.reset", name):
            self._power.reset(name)

    def pause(self, name: str) -> None:
        with self._action("vm.pause", name):
            self._power.pause(name)

    def resume(self, name: str) -> None:
        with self._action("vm.resume", name):
            self._power.resume(name)

    # -- changing ---------------------------------------------------------------------------

    def set_autostart(self, name: str, on: bool) -> None:
        self._setter.set_autostart(name, on)

    def owner(self, name: str) -> str | None:
        """The API user VM ``name`` belongs to (one small metadata call)."""
        return self._views.owner(name)

    def set_owner(self, name: str, owner: str | None) -> None:
        """Give VM ``name`` to the API user ``owner`` (None: to nobody)."""
        self._setter.set_owner(name, owner)

    def set_tags(self, name: str, tags: builtins.list[str]) -> None:
        """Replace the VM's tags."""
        with self._action("vm.tags", name):
            self._setter.set_tags(name, tags)
            self._remember_meta(name)

    def set_site(self, name: str, site: str | None, spec: str | None = None) -> None:
        """Mark the VM as managed by ``site`` with its spec's digest (``virtkit apply``)."""
        self._setter.set_site(name, site, spec)
        self._remember_meta(name)

    def _remember_meta(self, name: str) -> None:
        """virtkit changed the VM's metadata: the listing's copy follows at once (its event
        may reach this process later, and no other process may be listening)."""
        guest = self.host.lookup(name)
        self.meta.update(guest.uuid, VMMeta.of_domain(guest.definition(inactive=True)))

    def list_with_meta(self) -> builtins.list[tuple[VMSummary, VMMeta]]:
        """Every VM with the listing's copy of its virtkit metadata (site, spec digest)."""
        return self._views.list_with_meta()

    def set(
        self,
        name: str,
        *,
        vcpus: int | None = None,
        memory: int | str | None = None,
        max_vcpus: int | None = None,
    ) -> SetResult:
        """Change vCPUs, their maximum and/or memory (bytes, or text such as ``2G``; bare:
        MiB): persistently always, live where libvirt can (the maximum from the next start);
        all are checked before any is changed."""
        return self._setter.set(name, vcpus=vcpus, memory=memory, max_vcpus=max_vcpus)

    # -- deleting ---------------------------------------------------------------------------

    def delete(
        self, name: str, *, force: bool = False, remove_storage: bool = False
    ) -> DeleteResult:
        """Undefine a VM. Running VMs only with ``force``; its own disks only with
        ``remove_storage`` (disks virtkit created for it; attached images are never removed)."""
        with self._action("vm.delete", name):
            return self._deleter.delete(name, force=force, remove_storage=remove_storage)

    def storage_to_remove(self, name: str) -> builtins.list[str]:
        """What ``delete --remove-storage`` would remove, for a confirmation prompt."""
        return self._deleter.storage_to_remove(name)
