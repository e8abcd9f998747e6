"""A byte stream to a port on a remote libvirt host through SSH, for a ``qemu+ssh://`` URI: the
way libvirt itself reaches that host, and how virt-manager reaches a remote VM's display.

``ssh -W HOST:PORT`` relays stdin and stdout to ``HOST:PORT`` as the remote host sees it, so a
display that listens on the remote host's ``127.0.0.1`` (the default) is reachable with no port
opened. The user, port and identity come from the URI as libvirt reads them (``user@``,
``:port``, ``?keyfile=``, ``?no_verify=1``); the rest is the user's ssh configuration.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

SSH_SCHEMES = frozenset({"qemu+ssh", "qemu+libssh", "qemu+libssh2"})


def is_ssh_uri(uri: str) -> bool:
    return urlparse(uri).scheme in SSH_SCHEMES


def tunnel_command(uri: str, host: str, port: int) -> list[str] | None:
    """The ``ssh`` command line whose stdin/stdout is ``host:port`` on the URI's remote host
    (``host`` as that host sees it), or None for a URI that is not an SSH one."""
    parsed = urlparse(uri)
    if parsed.scheme not in SSH_SCHEMES or not parsed.hostname:
        return None
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    if parsed.port:
        command += ["-p", str(parsed.port)]
    if parsed.username:
        command += ["-l", parsed.username]
    if query.get("keyfile"):
        command += ["-i", query["keyfile"], "-o", "IdentitiesOnly=yes"]
    if query.get("no_verify") == "1":
        command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    if query.get("known_hosts"):
        command += ["-o", f"UserKnownHostsFile={query['known_hosts']}"]
    target = f"[{host}]" if ":" in host else host
    return [*command, "-W", f"{target}:{port}", "--", parsed.hostname]
