"""User-data from flags and files, checked before anything is made.

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

import dataclasses
import email
import logging
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from virtkit.cloudinit.keys import HostKey
from virtkit.cloudinit.password import hash_password
from virtkit.errors import InvalidInput

log = logging.getLogger(__name__)

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
HOST_KEY_SETTINGS = ("ssh_keys", "ssh_genkeytypes")  # a user-data with these keeps control


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
    # a plain password, hashed into password_hash when the user-data is made (this may run
    # openssl, so it is the seed's step, not the spec's)
    password: str | None = field(default=None, repr=False)


def _with_password_hashed(ci: CloudInit) -> CloudInit:
    if ci.password is None:
        return ci
    return dataclasses.replace(ci, password_hash=hash_password(ci.password), password=None)


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
    """The user-data of the seed: the flags' cloud-config merged with the user's own file."""
    flags = flags_config(_with_password_hashed(ci), vm_name)
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
