"""``virtkit vm console|wait|ssh``: reaching the guest (serial console, boot, SSH)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from virtkit.cli.state import State, pass_state
from virtkit.errors import InvalidInput


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Take the console from another client.")
@pass_state
def console(state: State, name: str, force: bool) -> None:
    """Attach to the VM's serial console. Escape with Ctrl+]."""
    from virtkit.cli.terminal import attach

    stream = state.client.consoles.open(name, force=force)
    click.echo(f"Connected to {name}'s serial console. Escape character is ^] (Ctrl+]).", err=True)
    attach(stream)
    click.echo(f"\nDisconnected from {name}.", err=True)


@click.command("wait")
@click.argument("name")
@click.option("--for", "what", type=click.Choice(["boot", "cloud-init", "ssh"]), default="ssh",
              show_default=True, help="What to wait for.")  # fmt: skip
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds.")
@pass_state
def wait(state: State, name: str, what: str, timeout: float) -> None:
    """Wait until the VM has booted, finished cloud-init, or answers SSH."""
    seconds = state.client.access.wait(name, what, timeout)
    click.echo(f"{name}: {what} after {seconds:.1f} s")


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--user", "-l", "login", help="Login (default: the user cloud-init made).")
@click.option("--identity", "-i", type=click.Path(), help="Private key file for ssh.")
@click.option("--no-host-key-check", is_flag=True,
              help="Accept whatever host key the guest shows (for a guest that did not take the "
                   "keys virtkit made for it).")  # fmt: skip
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def ssh(state: State, name: str, login: str | None, identity: str | None,
        no_host_key_check: bool, command: tuple[str, ...]) -> None:  # fmt: skip
    """SSH into the VM (user-mode forward or its address): virtkit vm ssh NAME [-- cmd ...]."""
    import shutil
    import subprocess
    import tempfile

    access = state.client.access
    address, port = access.ssh_target(name)
    user = login or access.login_user(name)
    pinned = None if no_host_key_check else access.known_hosts(name)
    if not shutil.which("ssh"):
        raise InvalidInput("ssh is not installed (apt-get install openssh-client)", code="no_ssh")
    argv = ["ssh", "-p", str(port), "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes" if command else "BatchMode=no"]  # fmt: skip
    if identity:
        argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
    with tempfile.TemporaryDirectory(prefix="virtkit-ssh-") as tmp:
        if pinned is not None:  # only the host keys virtkit made for this guest are accepted
            alias, text = pinned
            known = Path(tmp) / "known_hosts"
            known.write_text(text)
            argv += ["-o", f"HostKeyAlias={alias}", "-o", f'UserKnownHostsFile="{known}"',
                     "-o", "GlobalKnownHostsFile=/dev/null",
                     "-o", "StrictHostKeyChecking=yes"]  # fmt: skip
        else:  # the guest made its own keys: nothing to check them against
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv += ["--", f"{user}@{address}" if user else address]  # never read as an option
        argv += list(command)
        code = subprocess.run(argv, check=False).returncode
    if code == 255 and pinned is not None:  # ssh's own failures (not the remote command's)
        click.echo(
            f"virtkit: if ssh said 'Host key verification failed', {name} does not show the host "
            "keys virtkit made for it ('vm show' lists them): a guest that ignores cloud-init's "
            "ssh_keys (cloudbase-init) or another machine answering. --no-host-key-check skips "
            "the check.",
            err=True,
        )
    sys.exit(code)
