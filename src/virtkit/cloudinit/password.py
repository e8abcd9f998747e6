"""The user's password, as /etc/shadow holds it. Hashing may run ``openssl``: it is done when the
seed is made (:func:`virtkit.cloudinit.userdata.render_user_data`), never while a spec is
validated; :func:`check_password` is the pure check validation runs."""

from __future__ import annotations

import warnings

from virtkit.errors import InvalidInput

HASH_PREFIXES = ("$6$", "$5$", "$y$")


def is_hashed(password: str) -> bool:
    """Whether ``password`` is already a crypt(3) hash (SHA-512, SHA-256 or yescrypt)."""
    return password.startswith(HASH_PREFIXES)


def check_password(password: str) -> None:
    """Refuse what cannot be a password (no process is run)."""
    if not password:
        raise InvalidInput("the password is empty", code="invalid_password")


def hash_password(password: str) -> str:
    """SHA-512 crypt of ``password`` (what /etc/shadow holds); already-hashed values pass."""
    if is_hashed(password):
        return password
    check_password(password)
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
