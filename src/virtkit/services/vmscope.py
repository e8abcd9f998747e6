"""Which VMs a caller sees and may act on: every VM, or only their own.

A VM records its owner in virtkit's metadata: the API user who created or cloned it, or whom
an admin gave it (``PATCH /vms/{name}`` with ``owner``). With the service's ``api_vm_scope``
at ``own``, a caller whose role lacks the permission ``vm.all`` (operators and viewers; admins
have it) sees only the VMs they own: the others are not listed, and naming one answers 404
``vm_not_found``, as for a VM that does not exist, so their names do not leak. Their tasks and
events are only their own. With ``all`` (the default) everyone sees every VM, as their role
allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from virtkit.errors import NotFound
from virtkit.services.roles import allowed

PERMISSION = "vm.all"
SCOPES = ("all", "own")

T = TypeVar("T")


def restricted(role: str, scope: str) -> bool:
    """Whether a caller of ``role`` sees only their own VMs under ``scope``."""
    return scope == "own" and not allowed(role, PERMISSION)


def visible(
    items: Iterable[T], user: str, role: str, scope: str, *, owner: str = "owner"
) -> list[T]:
    """The items (VM summaries; tasks with ``owner="user"``) a caller may see."""
    if not restricted(role, scope):
        return list(items)
    return [item for item in items if getattr(item, owner) == user]


def check_owner(name: str, owner: str | None, user: str) -> None:
    """404 ``vm_not_found`` unless ``user`` owns VM ``name`` (whose owner is ``owner``)."""
    if owner != user:
        raise NotFound(f"no VM named {name!r}", code="vm_not_found")


__all__ = ["PERMISSION", "SCOPES", "check_owner", "restricted", "visible"]
