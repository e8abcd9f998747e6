"""Roles and the permissions each one grants: the one place that says who may do what.

API routes ask ``allowed(role, permission)``; the names are stable strings (documented in
``docs/api.md``), so a route declares what it needs and never checks a role by name.
"""

from __future__ import annotations

from virtkit.errors import InvalidInput

PERMISSIONS: tuple[str, ...] = (
    "vm.read", "vm.all", "vm.power", "vm.create", "vm.change", "vm.delete", "console",
    "storage.read", "storage.write", "network.read", "network.write",
    "host.read", "host.write", "host.path", "task.read", "event.read", "user.admin", "audit.read",
)  # fmt: skip

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")

# ``vm.all`` (admins): every VM, not only one's own, when the service runs with
# ``api_vm_scope = own`` (services/vmscope.py); then viewers and operators see the VMs they own.
_VIEWER = frozenset(
    {"vm.read", "storage.read", "network.read", "host.read", "task.read", "event.read"}
)
# Operators run VMs (creating them from the templates and images that exist), but the host's
# storage, networks and settings, the users and the audit log stay with admins. So does naming
# files on the host by path (``host.path``): QEMU opens a kernel, an ISO or a disk with more
# rights than an operator has (services/hostpaths.py says which paths need it).
_OPERATOR = _VIEWER | {"vm.power", "vm.create", "vm.change", "vm.delete", "console"}
_GRANTS: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "operator": frozenset(_OPERATOR),
    "admin": frozenset(PERMISSIONS),
}


def validate_role(role: str) -> str:
    if role not in _GRANTS:
        raise InvalidInput(
            f"unknown role {role!r}: use one of {', '.join(ROLES)}", code="unknown_role"
        )
    return role


def permissions(role: str) -> frozenset[str]:
    """What ``role`` may do; :class:`InvalidInput` (``unknown_role``) for an unknown role."""
    return _GRANTS[validate_role(role)]


def allowed(role: str, permission: str) -> bool:
    """Whether ``role`` has ``permission``; an unknown role has none. A permission name that
    does not exist is a bug in the caller, not a refusal: it raises ``ValueError``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return permission in _GRANTS.get(role, frozenset())


__all__ = ["PERMISSIONS", "ROLES", "allowed", "permissions", "validate_role"]
