"""The cloud-init part of a VM spec: what cloud-init (or cloudbase-init) does at first boot.

The checks are :mod:`virtkit.cloudinit`'s own (keys, user-data, static addressing), run as the
spec comes in, and pure: validating a spec runs no process. A plain ``password`` is kept as a
secret (never shown in a repr or a dump) and hashed when the seed is made.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from virtkit.errors import InvalidInput
from virtkit.specs.common import _Spec, _View, name_rule

UserName = Annotated[str, name_rule("user")]
HostName = Annotated[str, name_rule("host")]


class CloudInitSpec(_Spec):
    """What cloud-init (or cloudbase-init) does at first boot (see docs/cloud-init.md)."""

    user: UserName | None = Field(None, description="A user to create, with sudo.")
    ssh_keys: list[str] = Field(default_factory=list, description="SSH public keys (text).")
    password: SecretStr | None = Field(
        None, description="The user's password: hashed (SHA-512 crypt) into the seed."
    )
    password_hash: str | None = Field(
        None, description="The user's password, hashed (a 'password' that is a hash goes here)."
    )
    hostname: HostName | None = Field(None, description="Default: the VM's name.")
    packages: list[str] = Field(default_factory=list)
    runcmd: list[str] = Field(default_factory=list, description="Commands run at first boot.")
    user_data: str | None = Field(None, description="Your own user-data, merged with the above.")
    network_config: dict[str, Any] | None = Field(None, description="network-config v1 or v2.")
    ip: str | None = Field(None, description="Static address with prefix: 198.18.0.10/24.")
    gateway: str | None = None
    dns: list[str] = Field(default_factory=list)
    seed: Literal["nocloud", "configdrive"] = Field("nocloud", description="Seed format.")
    host_keys: bool = Field(
        True,
        description="virtkit makes the guest's SSH host keys and 'vm ssh' accepts only those; "
        "false: the guest makes its own (cloudbase-init, or a user-data that sets ssh_keys).",
    )

    @model_validator(mode="before")
    @classmethod
    def _hashed_password(cls, data: Any) -> Any:
        # a password that is already a hash is one (as hash_password passes it on)
        from virtkit.cloudinit.password import is_hashed

        if isinstance(data, dict) and data.get("password") is not None:
            data = dict(data)
            password = str(data.pop("password"))  # YAML may read a password as a number
            if is_hashed(password):
                data["password_hash"] = password
            else:  # as a SecretStr: kept as given (a str would lose its outer spaces)
                data["password"] = SecretStr(password)
        return data

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        from virtkit.cloudinit.password import check_password

        if value is not None:
            check_password(value.get_secret_value())  # InvalidInput: invalid_password
        return value

    @model_validator(mode="after")
    def _check(self) -> CloudInitSpec:
        from virtkit.cloudinit.keys import check_public_key
        from virtkit.cloudinit.netconfig import static_network
        from virtkit.cloudinit.userdata import parse_user_data

        try:
            self.ssh_keys = [check_public_key(k) for k in self.ssh_keys]
            if self.user_data is not None:
                parse_user_data(self.user_data)
            if self.network_config is not None and self.seed == "configdrive":
                raise ValueError(
                    "a ConfigDrive seed carries static addressing from ip; a network_config "
                    "needs seed nocloud"
                )
            if self.ip is not None:
                if self.network_config is not None:
                    raise ValueError("give either ip or network_config, not both")
                static_network(self.ip, self.gateway, self.dns, None)
            elif self.gateway or self.dns:
                raise ValueError("gateway and dns go with a static ip")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return self


class SeedFile(_View):
    """One file of a VM's cloud-init seed, as text, with its secrets hidden."""

    path: str = Field(description="Its path on the seed: user-data, openstack/latest/user_data...")
    text: str
    hidden: list[str] = Field(
        default_factory=list,
        description="What was replaced by '(hidden)': password hashes, private keys.",
    )


class SeedView(_View):
    """What a VM's cloud-init seed carries (``GET /vms/{name}/cloud-init``)."""

    source: str = Field(description="The seed ISO's path on the host.")
    format: Literal["nocloud", "configdrive", "unknown"]
    files: list[SeedFile]
