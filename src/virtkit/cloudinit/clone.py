"""A clone's seed: a copy of the original's with a fresh instance-id, the clone's host name, MAC
and SSH host keys."""

from __future__ import annotations

import email
import json
from email.mime.multipart import MIMEMultipart
from typing import Any

import yaml

from virtkit.cloudinit.keys import HostKey
from virtkit.cloudinit.seed import _iso, read_seed
from virtkit.cloudinit.userdata import (
    _cloud_config_part,
    _cloud_config_text,
    _mime_text,
    host_keys_config,
    parse_user_data,
)
from virtkit.errors import InvalidInput


def _rewrite_user_data(
    text: bytes, vm_name: str, host_keys: list[HostKey] | None
) -> tuple[bytes, bool]:
    """A user-data for a clone, and whether its host keys were placed: a cloud-config's
    ``hostname`` set to ``vm_name`` and, with ``host_keys``, its ``ssh_keys`` replaced by them
    (an empty list removes them: the guest makes new ones). In a multipart, virtkit's own
    cloud-config part (the first) is the one rewritten; everything else is kept as it is."""

    def needs(config: dict[str, Any]) -> bool:
        return "hostname" in config or host_keys is not None

    def rewrite(config: dict[str, Any]) -> str:
        if "hostname" in config:
            config["hostname"] = vm_name
        if host_keys:
            config["ssh_keys"] = host_keys_config(host_keys)
        elif host_keys is not None:
            config.pop("ssh_keys", None)
        return _cloud_config_text(config)

    try:
        kind, parsed = parse_user_data(text.decode())
    except (InvalidInput, UnicodeDecodeError):
        return text, False
    if kind == "cloud-config" and parsed is not None:
        return (rewrite(parsed).encode(), True) if needs(parsed) else (text, True)
    if kind != "multipart":
        return text, False
    message = email.message_from_bytes(text)
    leaves = [p for p in message.walk() if not p.is_multipart()]
    for index, part in enumerate(leaves):
        body = _cloud_config_part(part)
        if body is None:
            continue
        try:
            _kind, config = parse_user_data(body)
        except InvalidInput:
            return text, False
        if config is None or not needs(config):
            return text, config is not None
        rebuilt = MIMEMultipart()
        for other in leaves[:index]:
            rebuilt.attach(other)
        rebuilt.attach(_mime_text(rewrite(config), "cloud-config"))
        for other in leaves[index + 1 :]:
            rebuilt.attach(other)
        return rebuilt.as_bytes(), True
    return text, False


def reseed(
    data: bytes,
    vm_name: str,
    instance_id: str,
    mac: str | None = None,
    host_keys: list[HostKey] | None = None,
) -> bytes:
    """A copy of a seed ISO for a clone: a fresh instance-id, the clone's host name, static
    addressing matched to the clone's first NIC (``mac``) instead of the original's, and the
    clone's own SSH host keys (``host_keys``, when virtkit made the original's; an empty list:
    the original's are removed and the guest makes new ones)."""
    volume_id, files = read_seed(data)
    placed = True

    def rewritten(text: bytes) -> bytes:
        nonlocal placed
        out, ok = _rewrite_user_data(text, vm_name, host_keys)
        placed = placed and ok
        return out

    if volume_id == "cidata" and "meta-data" in files:
        meta = yaml.safe_load(files["meta-data"]) or {}
        meta["instance-id"] = instance_id
        meta["local-hostname"] = vm_name
        files["meta-data"] = yaml.safe_dump(meta, sort_keys=False).encode()
        files["user-data"] = rewritten(files.get("user-data", b""))
        if mac and "network-config" in files:
            network = yaml.safe_load(files["network-config"]) or {}
            for eth in (network.get("ethernets") or {}).values():
                if (
                    isinstance(eth, dict)
                    and isinstance(eth.get("match"), dict)
                    and ("macaddress" in eth["match"])
                ):
                    eth["match"]["macaddress"] = mac
            files["network-config"] = yaml.safe_dump(network, sort_keys=False).encode()
    elif volume_id == "config-2":
        key = "openstack/latest/meta_data.json"
        meta = json.loads(files[key])
        meta.update({"uuid": instance_id, "instance-id": instance_id, "hostname": vm_name,
                     "name": vm_name})  # fmt: skip
        files[key] = json.dumps(meta, indent=2).encode()
        user_key = "openstack/latest/user_data"
        if user_key in files:
            files[user_key] = rewritten(files[user_key])
        net_key = "openstack/latest/network_data.json"
        if mac and net_key in files:
            network = json.loads(files[net_key])
            for link in network.get("links", []):
                if "ethernet_mac_address" in link:
                    link["ethernet_mac_address"] = mac
            files[net_key] = json.dumps(network).encode()
    else:
        raise InvalidInput(f"not a cloud-init seed (volume id {volume_id!r})", code="invalid_seed")
    if host_keys is not None and not placed:
        raise InvalidInput(
            "the seed's user-data is not a cloud-config virtkit can rewrite: the clone cannot "
            "be given SSH host keys of its own",
            code="invalid_seed",
        )
    return _iso(volume_id, files)
