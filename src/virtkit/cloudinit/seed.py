"""The seed ISO that carries the user-data: NoCloud (volume ``cidata``) or ConfigDrive v2
(``config-2``), built in Python with pycdlib; and reading one back (clones, tests)."""

from __future__ import annotations

import io
import ipaddress
import json
import secrets
from typing import Any

import yaml

from virtkit.cloudinit.userdata import CloudInit, render_user_data
from virtkit.errors import InvalidInput

SEED_FORMATS = ("nocloud", "configdrive")


def new_instance_id() -> str:
    return "i-" + secrets.token_hex(8)


def _iso(volume_id: str, files: dict[str, bytes]) -> bytes:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=volume_id)
    made: set[str] = set()
    for path in sorted(files):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                made.add(directory)
                iso.add_directory(
                    "/" + "/".join(_iso9660(p, True) for p in parts[:depth]),
                    rr_name=parts[depth - 1], joliet_path="/" + directory,
                )  # fmt: skip
        name = "/" + "/".join(_iso9660(p, i < len(parts) - 1) for i, p in enumerate(parts))
        data = files[path]
        iso.add_fp(io.BytesIO(data), len(data), name + ";1", rr_name=parts[-1],
                   joliet_path="/" + path)  # fmt: skip
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _iso9660(name: str, directory: bool) -> str:
    """An ISO 9660 name (the Rock Ridge and Joliet names carry the real one)."""
    clean = "".join(c if c.isalnum() else "_" for c in name.upper())
    if directory:
        return clean[:31]
    stem, _, ext = clean.rpartition("_") if "." in name else (clean, "", "")
    return f"{stem[:24]}.{ext[:6]}" if ext else clean[:30]


def nocloud_files(
    user_data: str, instance_id: str, hostname: str, network: dict[str, Any] | None
) -> dict[str, bytes]:
    files = {
        "user-data": user_data.encode(),
        "meta-data": yaml.safe_dump(
            {"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False
        ).encode(),
    }
    if network is not None:
        files["network-config"] = yaml.safe_dump(network, sort_keys=False).encode()
    return files


def _network_data(network: dict[str, Any]) -> dict[str, Any]:
    """OpenStack network_data.json for a static v2 config virtkit made (ConfigDrive)."""
    eth = network["ethernets"]["eth0"]
    iface = ipaddress.ip_interface(eth["addresses"][0])
    link: dict[str, Any] = {"id": "eth0", "type": "phy"}
    mac = eth.get("match", {}).get("macaddress")
    if mac:
        link["ethernet_mac_address"] = mac
    net: dict[str, Any] = {
        "id": "network0", "link": "eth0",
        "type": "ipv4" if iface.version == 4 else "ipv6",
        "ip_address": str(iface.ip), "netmask": str(iface.network.netmask),
    }  # fmt: skip
    for route in eth.get("routes", []):
        net["routes"] = [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": route["via"]}]
    services = [
        {"type": "dns", "address": a} for a in eth.get("nameservers", {}).get("addresses", [])
    ]
    return {"links": [link], "networks": [net], "services": services}


def configdrive_files(
    user_data: str, instance_id: str, hostname: str, network: dict[str, Any] | None,
    ssh_keys: list[str],
) -> dict[str, bytes]:  # fmt: skip
    meta: dict[str, Any] = {
        "uuid": instance_id, "instance-id": instance_id, "hostname": hostname, "name": hostname,
        "availability_zone": "virtkit", "launch_index": 0,
    }  # fmt: skip
    if ssh_keys:
        meta["public_keys"] = {f"key{i}": k for i, k in enumerate(ssh_keys)}
    files = {
        "openstack/latest/meta_data.json": json.dumps(meta, indent=2).encode(),
        "openstack/latest/user_data": user_data.encode(),
    }
    if network is not None:
        files["openstack/latest/network_data.json"] = json.dumps(_network_data(network)).encode()
    return files


def build_seed(ci: CloudInit, vm_name: str, instance_id: str, mac: str | None = None) -> bytes:
    """The seed ISO: volume id ``cidata`` (NoCloud) or ``config-2`` (ConfigDrive v2)."""
    user_data = render_user_data(ci, vm_name)
    hostname = ci.hostname or vm_name
    if ci.seed == "nocloud":
        return _iso("cidata", nocloud_files(user_data, instance_id, hostname, ci.network_config))
    if ci.seed == "configdrive":
        network = ci.network_config
        if (network is not None and network.get("version") != 2) or (
            network is not None and "eth0" not in network.get("ethernets", {})
        ):
            raise InvalidInput(
                "a ConfigDrive seed carries static addressing from --ip; a network-config file "
                "needs --seed nocloud",
                code="invalid_network_config",
            )
        return _iso("config-2", configdrive_files(user_data, instance_id, hostname, network,
                                                  ci.ssh_keys))  # fmt: skip
    raise InvalidInput(
        f"unknown seed format {ci.seed!r} (known: {', '.join(SEED_FORMATS)})", code="invalid_seed"
    )


def read_seed(data: bytes) -> tuple[str, dict[str, bytes]]:
    """(volume id, files by their Rock Ridge path) of a seed ISO (for clones and tests)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        volume_id = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for dirpath, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                path = f"{dirpath.rstrip('/')}/{name}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=path)
                files[path.lstrip("/")] = out.getvalue()
    finally:
        iso.close()
    return volume_id, files
