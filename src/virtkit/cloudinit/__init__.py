"""cloud-init (and cloudbase-init) seeds, one concern a module:

- :mod:`~virtkit.cloudinit.keys`: SSH public keys (checked), fingerprints, host key pairs;
- :mod:`~virtkit.cloudinit.password`: the password check, and hashing (may run ``openssl``);
- :mod:`~virtkit.cloudinit.userdata`: user-data from flags and files, checks and the merge rule;
- :mod:`~virtkit.cloudinit.netconfig`: network-config files and static addressing;
- :mod:`~virtkit.cloudinit.seed`: the NoCloud / ConfigDrive v2 ISO (pycdlib), and reading one;
- :mod:`~virtkit.cloudinit.clone`: a clone's copy of a seed.

Everything but hashing a password and making a seed is pure. ``virtkit.cloudinit.<name>`` works
for every name; a name's module is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "keys": [
        "KEY_TYPES",
        "PRIVATE_MARKERS",
        "HOST_KEY_TYPES",
        "HostKey",
        "read_public_key",
        "check_public_key",
        "key_fingerprint",
    ],
    "password": ["HASH_PREFIXES", "is_hashed", "check_password", "hash_password"],
    "userdata": [
        "KNOWN_KEYS",
        "LIST_KEYS",
        "HOST_KEY_SETTINGS",
        "CloudInit",
        "load_yaml",
        "parse_user_data",
        "check_cloud_config",
        "flags_config",
        "host_keys_config",
        "sets_host_keys",
        "merge",
        "render_user_data",
    ],
    "netconfig": ["parse_network_config", "static_network"],
    "seed": [
        "SEED_FORMATS",
        "new_instance_id",
        "nocloud_files",
        "configdrive_files",
        "build_seed",
        "read_seed",
        "_iso",
    ],
    "clone": ["reseed"],
}
_EXPORTS = {
    name: f"virtkit.cloudinit.{module}" for module, names in _MODULES.items() for name in names
}

if TYPE_CHECKING:
    from virtkit.cloudinit.clone import reseed
    from virtkit.cloudinit.keys import (
        HOST_KEY_TYPES,
        KEY_TYPES,
        PRIVATE_MARKERS,
        HostKey,
        check_public_key,
        key_fingerprint,
        read_public_key,
    )
    from virtkit.cloudinit.netconfig import parse_network_config, static_network
    from virtkit.cloudinit.password import HASH_PREFIXES, check_password, hash_password, is_hashed
    from virtkit.cloudinit.seed import (
        SEED_FORMATS,
        _iso,
        build_seed,
        configdrive_files,
        new_instance_id,
        nocloud_files,
        read_seed,
    )
    from virtkit.cloudinit.userdata import (
        HOST_KEY_SETTINGS,
        KNOWN_KEYS,
        LIST_KEYS,
        CloudInit,
        check_cloud_config,
        flags_config,
        host_keys_config,
        load_yaml,
        merge,
        parse_user_data,
        render_user_data,
        sets_host_keys,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'virtkit.cloudinit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "HASH_PREFIXES",
    "HOST_KEY_SETTINGS",
    "HOST_KEY_TYPES",
    "KEY_TYPES",
    "KNOWN_KEYS",
    "LIST_KEYS",
    "PRIVATE_MARKERS",
    "SEED_FORMATS",
    "CloudInit",
    "HostKey",
    "_iso",
    "build_seed",
    "check_cloud_config",
    "check_password",
    "check_public_key",
    "configdrive_files",
    "flags_config",
    "hash_password",
    "host_keys_config",
    "is_hashed",
    "key_fingerprint",
    "load_yaml",
    "merge",
    "new_instance_id",
    "nocloud_files",
    "parse_network_config",
    "parse_user_data",
    "read_public_key",
    "read_seed",
    "render_user_data",
    "reseed",
    "sets_host_keys",
    "static_network",
]
