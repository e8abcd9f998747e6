"""cloud-init (and cloudbase-init) seeds: user-data from flags and files, checked before anything
is made, and the NoCloud or ConfigDrive v2 ISO that carries it (built in Python with pycdlib).

Merging a user's ``--user-data`` with the flags (one rule): a ``#cloud-config`` file is the base;
for single values (``hostname``, ``ssh_pwauth``...) the flags win; lists (``users``,
``packages``, ``runcmd``, ``write_files``, ``ssh_authorized_keys``) are joined, the file's
entries first. A shell script or a MIME multipart file is kept as it is and sent together with
the flags' cloud-config as a multipart message (cloud-init runs both).

SSH host keys: virtkit makes the guest's host keys on the host (``host_keys``) and hands them to
cloud-init (``ssh_keys``), so ``vm ssh`` can check the guest's identity from the first connection
and the guest need not generate keys at first boot (an RSA key under TCG takes seconds, at boot
when the kernel's entropy pool is youngest). A user-data that sets ``ssh_keys`` or
``ssh_genkeytypes`` itself keeps control of them.
"""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import io
import ipaddress
import json
import logging
import secrets
import warnings
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import yaml

from virtkit.errors import InvalidInput

log = logging.getLogger(__name__)

SEED_FORMATS = ("nocloud", "configdrive")
# Top-level cloud-config keys cloud-init knows (modules and base settings); others are warned of.
KNOWN_KEYS = frozenset(
    [
        "apk_repos",
        "apt",
        "apt_pipelining",
        "apt_preserve_sources_list",
        "ansible",
        "bootcmd",
        "byobu_by_default",
        "ca_certs",
        "ca-certs",
        "chef",
        "chpasswd",
        "cloud_config_modules",
        "cloud_final_modules",
        "cloud_init_modules",
        "datasource",
        "datasource_list",
        "device_aliases",
        "disable_ec2_metadata",
        "disable_root",
        "disable_root_opts",
        "disk_setup",
        "drivers",
        "fan",
        "final_message",
        "fqdn",
        "fs_setup",
        "groups",
        "growpart",
        "hostname",
        "keyboard",
        "landscape",
        "locale",
        "locale_configfile",
        "lxd",
        "manage_etc_hosts",
        "manage_resolv_conf",
        "mcollective",
        "merge_how",
        "merge_type",
        "mounts",
        "mount_default_fields",
        "network",
        "no_ssh_fingerprints",
        "ntp",
        "output",
        "package_reboot_if_required",
        "package_update",
        "package_upgrade",
        "packages",
        "phone_home",
        "power_state",
        "prefer_fqdn_over_hostname",
        "preserve_hostname",
        "puppet",
        "random_seed",
        "reporting",
        "resize_rootfs",
        "resolv_conf",
        "rh_subscription",
        "rsyslog",
        "runcmd",
        "salt_minion",
        "seed_random",
        "snap",
        "spacewalk",
        "ssh",
        "ssh_authorized_keys",
        "ssh_deletekeys",
        "ssh_fp_console_blacklist",
        "ssh_genkeytypes",
        "ssh_import_id",
        "ssh_keys",
        "ssh_key_console_blacklist",
        "ssh_publish_hostkeys",
        "ssh_pwauth",
        "ssh_quiet_keygen",
        "swap",
        "system_info",
        "timezone",
        "ubuntu_advantage",
        "ubuntu_pro",
        "updates",
        "user",
        "users",
        "vendor_data",
        "wireguard",
        "write_files",
        "yum_repos",
        "zypper",
        "autoinstall",
    ]
)
LIST_KEYS = ("users", "packages", "runcmd", "write_files", "ssh_authorized_keys", "bootcmd")
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")  # fmt: skip
PRIVATE_MARKERS = ("PRIVATE KEY-----", "PuTTY-User-Key-File")
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")  # cloud-init's own default set
HOST_KEY_SETTINGS = ("ssh_keys", "ssh_genkeytypes")  # a user-data with these keeps control


@dataclass(frozen=True)
class HostKey:
    """One SSH host key pair made for a guest: ``type`` is ed25519, ecdsa or rsa."""

    type: str
    private: str = field(repr=False)  # OpenSSH private key text; goes into the seed only
    public: str = field()  # "ssh-ed25519 AAAA..." (no comment)


@dataclass
class CloudInit:
    """What a user asked cloud-init to do (validated)."""

    user: str | None = None
    ssh_keys: list[str] = field(default_factory=list)
    password_hash: str | None = None
    hostname: str | None = None
    packages: list[str] = field(default_factory=list)
    runcmd: list[str] = field(default_factory=list)
    user_data: str | None = None  # the user's own file, checked
    network_config: dict[str, Any] | None = None
    seed: str = "nocloud"
    host_keys: list[HostKey] = field(default_factory=list)


# -- checks ------------------------------------------------------------------------------------


def read_public_key(path: str) -> str:
    """The public key in ``path``, checked. A private key is refused (and never stored)."""
    try:
        text = Path(path).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"cannot read SSH key file {path}: {getattr(exc, 'strerror', None) or exc}",
            code="invalid_ssh_key",
        ) from None
    return check_public_key(text, path)


def check_public_key(text: str, source: str = "SSH key") -> str:
    if any(marker in text for marker in PRIVATE_MARKERS):
        log.warning("%s holds a PRIVATE key: refused, and it was not stored anywhere", source)
        raise InvalidInput(
            f"{source} is a private key, not a public one: give the .pub file (the private key "
            "was not stored)",
            code="ssh_private_key",
        )
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise InvalidInput(f"{source} must hold one public key line", code="invalid_ssh_key")
    parts = lines[0].split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidInput(
            f"{source} is not an SSH public key (expected a line like 'ssh-ed25519 AAAA... "
            "comment')",
            code="invalid_ssh_key",
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{source}: the key data is not base64", code="invalid_ssh_key"
        ) from None
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4 : 4 + length].decode(errors="replace") != parts[0]:
        raise InvalidInput(
            f"{source}: the key data does not match its type {parts[0]}", code="invalid_ssh_key"
        )
    return " ".join(parts)


def key_fingerprint(public: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (``ssh-keygen -l``); "?" if it is
    not one."""
    try:
        blob = base64.b64decode(public.split()[1], validate=True)
    except (IndexError, binascii.Error, ValueError):
        return "?"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _is_multipart(text: str) -> bool:
    return text.lstrip().lower().startswith(("content-type: multipart", "mime-version:"))


def _cloud_config_text(config: dict[str, Any]) -> str:
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def _mime_text(text: str, subtype: str) -> MIMEText:
    return MIMEText(text, subtype, "us-ascii" if text.isascii() else "utf-8")


def _cloud_config_part(part: Any) -> str | None:
    """A multipart leaf's text if cloud-init reads it as cloud-config: typed so, or plain text
    starting with the header (cloud-init looks at the first line of untyped parts)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    text = payload.decode(errors="replace")
    kind = part.get_content_type()
    if kind == "text/cloud-config" or (
        kind in ("text/plain", "text/x-not-multipart") and text.lstrip().startswith("#cloud-config")
    ):
        return text
    return None


def hash_password(password: str) -> str:
    """SHA-512 crypt of ``password`` (what /etc/shadow holds); already-hashed values pass."""
    if password.startswith(("$6$", "$5$", "$y$")):
        return password
    if not password:
        raise InvalidInput("the password is empty", code="invalid_password")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # the C library's crypt(3); gone from Python 3.13
    except ImportError:
        import subprocess

        done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout.strip()
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def load_yaml(text: str, source: str, code: str) -> Any:
    """YAML, or an error naming ``source`` and the line and column of the problem."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{source} is not valid YAML{where}: {problem}", code=code) from None


def parse_user_data(text: str, source: str = "user-data") -> tuple[str, dict[str, Any] | None]:
    """(kind, parsed cloud-config): kind is cloud-config, script or multipart. Refuses what
    cloud-init would not run, and type errors in the keys virtkit writes; warns of unknown keys."""
    first = text.lstrip().split("\n", 1)[0].strip()
    if first.startswith("#!"):
        return "script", None
    if _is_multipart(text):
        return "multipart", None
    if first != "#cloud-config":
        raise InvalidInput(
            f"{source} is not cloud-config: it must start with '#cloud-config' (or be a '#!' "
            f"script or a MIME multipart message); it starts with {first[:40]!r}",
            code="invalid_user_data",
        )
    data = load_yaml(text, source, "invalid_user_data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(
            f"{source}: a cloud-config is a mapping of keys, got {type(data).__name__}",
            code="invalid_user_data",
        )
    check_cloud_config(data, source)
    return "cloud-config", data


def _type_error(source: str, key: str, expected: str, value: object) -> InvalidInput:
    return InvalidInput(
        f"{source}: {key} must be {expected}, got {type(value).__name__} ({value!r:.60})",
        code="invalid_user_data",
    )


def check_cloud_config(data: dict[str, Any], source: str = "user-data") -> None:
    unknown = sorted(k for k in data if k not in KNOWN_KEYS)
    if unknown:
        log.warning("%s: unknown cloud-config keys (cloud-init ignores them): %s",
                    source, ", ".join(map(str, unknown)))  # fmt: skip
    if "hostname" in data and not isinstance(data["hostname"], str):
        raise _type_error(source, "hostname", "a string", data["hostname"])
    for key in ("packages", "runcmd", "users", "write_files", "ssh_authorized_keys", "bootcmd"):
        if key in data and not isinstance(data[key], list):
            raise _type_error(source, key, "a list", data[key])
    for item in data.get("ssh_authorized_keys", []):
        if not isinstance(item, str):
            raise _type_error(source, "ssh_authorized_keys entries", "strings", item)
    for item in data.get("packages", []):
        if not isinstance(item, (str, list)):
            raise _type_error(source, "packages entries", "strings", item)
    for item in data.get("runcmd", []):
        if not isinstance(item, (str, list)):
            raise _type_error(source, "runcmd entries", "strings or lists", item)
    for item in data.get("users", []):
        if isinstance(item, str):
            continue
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _type_error(source, "users entries", "'default' or mappings with a name", item)
        keys = item.get("ssh_authorized_keys", [])
        if not isinstance(keys, list):
            raise _type_error(source, "users[].ssh_authorized_keys", "a list", keys)
    for item in data.get("write_files", []):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise _type_error(source, "write_files entries", "mappings with a path", item)


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


# -- user-data ---------------------------------------------------------------------------------


def flags_config(ci: CloudInit, vm_name: str) -> dict[str, Any]:
    """The cloud-config the flags ask for."""
    # manage_etc_hosts: the host name resolves (else sudo waits on DNS and warns)
    config: dict[str, Any] = {"hostname": ci.hostname or vm_name, "manage_etc_hosts": True}
    if ci.user:
        user: dict[str, Any] = {
            "name": ci.user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "groups": ["sudo"], "lock_passwd": ci.password_hash is None,
        }  # fmt: skip
        if ci.ssh_keys:
            user["ssh_authorized_keys"] = list(ci.ssh_keys)
        if ci.password_hash:
            user["passwd"] = ci.password_hash
        config["users"] = ["default", user]
    elif ci.ssh_keys:
        config["ssh_authorized_keys"] = list(ci.ssh_keys)
    if ci.password_hash:
        config["ssh_pwauth"] = True
        if not ci.user:
            config["chpasswd"] = {"expire": False, "users": [
                {"name": "root", "password": ci.password_hash, "type": "hash"}]}  # fmt: skip
    if ci.host_keys:
        config["ssh_keys"] = host_keys_config(ci.host_keys)
    if ci.packages:
        config["packages"] = list(ci.packages)
    if ci.runcmd:
        config["runcmd"] = list(ci.runcmd)
    return config


def host_keys_config(keys: list[HostKey]) -> dict[str, str]:
    """cloud-init's ``ssh_keys``: written to /etc/ssh instead of generating keys."""
    config = {}
    for key in keys:
        config[f"{key.type}_private"] = key.private
        config[f"{key.type}_public"] = key.public
    return config


def _cloud_configs(user_data: str) -> list[dict[str, Any]]:
    """The cloud-config documents in a (checked) user-data: itself, or its multipart's parts."""

    def config(text: str) -> dict[str, Any] | None:
        if not text.lstrip().startswith("#cloud-config"):
            return None
        data = load_yaml(text, "user-data", "invalid_user_data")
        return data if isinstance(data, dict) else None

    texts = [user_data]
    if _is_multipart(user_data):
        parts = email.message_from_string(user_data).walk()
        texts = [t for t in map(_cloud_config_part, parts) if t is not None]
    return [c for c in map(config, texts) if c is not None]


def sets_host_keys(user_data: str | None) -> bool:
    """Whether a user's own user-data decides the guest's SSH host keys."""
    if user_data is None:
        return False
    return any(key in config for config in _cloud_configs(user_data) for key in HOST_KEY_SETTINGS)


def merge(base: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The module's one rule: flags win for single values; lists are joined, base first."""
    merged = dict(base)
    for key, value in flags.items():
        if key in LIST_KEYS and isinstance(merged.get(key), list):
            extra = [v for v in value if not (v == "default" and "default" in merged[key])]
            merged[key] = [*merged[key], *extra]
        else:
            merged[key] = value
    return merged


def render_user_data(ci: CloudInit, vm_name: str) -> str:
    flags = flags_config(ci, vm_name)
    if ci.user_data is None:
        return _cloud_config_text(flags)
    kind, parsed = parse_user_data(ci.user_data)
    if kind == "cloud-config":
        assert parsed is not None
        return _cloud_config_text(merge(parsed, flags))
    message = MIMEMultipart()
    message.attach(_mime_text(_cloud_config_text(flags), "cloud-config"))
    if kind == "script":
        message.attach(_mime_text(ci.user_data, "x-shellscript"))
    else:  # the user's own multipart: its parts, as they are
        theirs = email.message_from_string(ci.user_data)
        for item in theirs.get_payload() if theirs.is_multipart() else [theirs]:
            message.attach(item)
    return message.as_string()


# -- seeds -------------------------------------------------------------------------------------


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
