"""network-config: a user's file (v1 or v2, checked), or the v2 config of a static address."""

from __future__ import annotations

import ipaddress
from typing import Any

from virtkit.cloudinit.userdata import load_yaml
from virtkit.errors import InvalidInput


def parse_network_config(text: str, source: str = "network-config") -> dict[str, Any]:
    """A network-config v1 or v2 (optionally under a top-level ``network:`` key)."""
    data = load_yaml(text, source, "invalid_network_config")
    if isinstance(data, dict) and isinstance(data.get("network"), dict):
        data = data["network"]
    if not isinstance(data, dict) or data.get("version") not in (1, 2):
        raise InvalidInput(
            f"{source} must be a network-config with 'version: 1' or 'version: 2'",
            code="invalid_network_config",
        )
    if data["version"] == 1 and not isinstance(data.get("config"), list):
        raise InvalidInput(
            f"{source}: version 1 needs a 'config' list", code="invalid_network_config"
        )
    if data["version"] == 2 and not any(
        isinstance(data.get(k), dict) for k in ("ethernets", "bonds", "bridges", "vlans")
    ):
        raise InvalidInput(
            f"{source}: version 2 needs ethernets (or bonds, bridges, vlans)",
            code="invalid_network_config",
        )
    return data


def static_network(ip: str, gateway: str | None, dns: list[str], mac: str | None) -> dict[str, Any]:
    """A v2 network-config giving the (first) NIC a static address."""
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError:
        raise InvalidInput(
            f"invalid --ip {ip!r}: give an address with its prefix, like 198.18.0.10/24",
            code="invalid_ip",
        ) from None
    if "/" not in ip:
        raise InvalidInput(f"--ip {ip!r} needs a prefix length (like /24)", code="invalid_ip")
    eth: dict[str, Any] = {"addresses": [str(iface)]}
    if mac:
        eth["match"] = {"macaddress": mac}
        eth["set-name"] = "eth0"
    else:
        eth["match"] = {"name": "e*"}
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError:
            raise InvalidInput(f"invalid --gateway {gateway!r}", code="invalid_ip") from None
        if gw not in iface.network:
            raise InvalidInput(f"gateway {gateway} is outside {iface.network}", code="invalid_ip")
        eth["routes"] = [{"to": "default" if iface.version == 4 else "::/0", "via": str(gw)}]
    if dns:
        for server in dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise InvalidInput(f"invalid DNS server {server!r}", code="invalid_ip") from None
        eth["nameservers"] = {"addresses": dns}
    return {"version": 2, "ethernets": {"eth0": eth}}
