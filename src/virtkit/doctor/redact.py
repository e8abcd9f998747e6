"""Secrets out of text that leaves the host (``virtkit diag bundle``): one function, :func:`redact`,
through which every file of a bundle passes, whatever it is (XML, logs, JSON, YAML).

It works on text, not on parsed documents, so that nothing escapes it for being malformed,
truncated or of an unexpected kind. Each rule keeps the name of what it hid (the attribute, the
key, the header) and replaces only the value with ``(redacted)``; the counts per rule go to the
bundle's manifest, never the values. A rule errs on the side of hiding: a bundle with a hidden
harmless value is still useful, one with a leaked password is not.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

REDACTED = "(redacted)"

# Key names whose values are secrets: a graphics passwd, a cloud-config password or
# hashed_passwd, an access_token, X-Auth-Token, VIRTKIT_API_TOKEN, secret_key, private_key, ...
_KEY = (
    r"(?<![\w.-])(?P<key>[\w.-]*?(?:passwd|password|passphrase|passwort|secret|token|"
    r"api[_-]?key|access[_-]?key|private[_-]?key|session[_-]?id|cookie))(?![\w])"
)
# Values that are no secret (QEMU's ``password=on``, JSON's ``"token": null``): kept, so that
# what a bundle says about a setting survives.
_HARMLESS = {"", "on", "off", "yes", "no", "true", "false", "null", "none", "~", "(hidden)",
             REDACTED, "[]", "{}"}  # fmt: skip

_PEM = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END (?P=kind)PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# The tail of a key block whose BEGIN line a truncation cut off: from the start to its END.
_PEM_TAIL = re.compile(r"\A.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.DOTALL)
# crypt(3) and argon2 hashes, wherever they stand: $6$salt$hash, $y$..., $2b$..., $argon2id$...
_HASH = re.compile(r"\$(?:1|2[abxy]|5|6|7|y|gy|sha1|md5|argon2(?:id|i|d))\$[A-Za-z0-9./$=,+]+")
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization\s*[:=]\s*)(?P<value>[^\r\n\"'<>]+)", re.IGNORECASE
)
_BEARER = re.compile(r"(?P<head>\b(?:bearer|basic|token)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/:@]+:)(?P<value>[^\s/@]+)@")
_VIRTKIT_TOKEN = re.compile(r"\bvkt_[A-Za-z0-9_-]{8,}")
# A bare value's characters: up to a space, a quote, a separator, or an escaped newline or tab
# of text inside a JSON string (a user-data shown in a JSON file is one line with "\n" in it).
_VALUE = r"(?:[^\s\"'&;,<>}\]\\]|\\[^nrt\"])+"
# key='v' / key="v" (XML attributes, shell, TOML), "key": "v" (JSON), key: 'v' (YAML)
_QUOTED = re.compile(
    r"(?P<head>(?P<q0>[\"']?)" + _KEY + r"(?P=q0)\s*[:=]\s*(?P<q>[\"']))(?P<value>.*?)(?P=q)",
    re.IGNORECASE | re.DOTALL,
)
# key=v (query strings, command lines, logs), key: v (YAML, HTTP headers) up to the line's end
_BARE = re.compile(
    r"(?P<head>" + _KEY + r"[\"']?\s*(?:=|:[ \t]+)[ \t]*)(?P<value>" + _VALUE + ")",
    re.IGNORECASE,
)
# <passwd>v</passwd>, <secret>v</secret>, <password>v</password> (XML elements' text)
_ELEMENT = re.compile(
    r"(?P<head><(?P<tag>[\w:-]*(?:passwd|password|secret|token|key))(?:\s[^>]*)?>)(?P<value>[^<]+)"
    r"(?=</(?P=tag)>)",
    re.IGNORECASE,
)
# cloud-config's chpasswd: the user:password pairs of its list (a block, a flow list, a mapping)
_CHPASSWD = re.compile(r"^(?P<indent>[ \t]*)chpasswd:[ \t]*(?P<rest>.*)$", re.MULTILINE)
_PAIR = re.compile(r"(?P<head>(?<![\w.-])[\w.-]+:)(?P<value>(?:[^\s,'\"\]}|\\]|\\[^nrt\"])+)")


def _sub(
    pattern: re.Pattern[str], kind: str, text: str, counts: Counter[str], *, keep_head: bool = True
) -> str:
    def one(match: re.Match[str]) -> str:
        groups = match.groupdict()
        value = groups.get("value")
        if value is not None and value.strip().lower() in _HARMLESS:
            return match.group(0)
        counts[kind] += 1
        if not keep_head or value is None:
            return REDACTED
        head = match.group("head")
        end = match.group(0)[match.end("value") - match.start() :]
        return head + REDACTED + end

    return pattern.sub(one, text)


def _chpasswd(text: str, counts: Counter[str]) -> str:
    """The user:password pairs of each ``chpasswd:`` block (its inline rest and its
    more-indented lines), and of any line that names chpasswd (``echo root:pw | chpasswd`` in a
    runcmd, a log line, a user-data inside a JSON string)."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = _CHPASSWD.match(lines[i])
        if match is None:
            if "chpasswd" in lines[i].lower():
                lines[i] = _pairs(lines[i], counts)
            i += 1
            continue
        indent = len(match.group("indent").expandtabs())
        lines[i] = lines[i][: match.start("rest")] + _pairs(match.group("rest"), counts)
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            lines[i] = _pairs(lines[i], counts)
            i += 1
    return "\n".join(lines)


def _pairs(line: str, counts: Counter[str]) -> str:
    # "expire: false" is YAML (a space after the colon); "root:s3cret" is a pair
    return _sub(_PAIR, "chpasswd-pairs", line, counts)


_RULES: list[tuple[str, Callable[[str, Counter[str]], str]]] = [
    ("private-keys", lambda t, c: _sub(_PEM, "private-keys", t, c, keep_head=False)),
    ("private-keys", lambda t, c: _sub(_PEM_TAIL, "private-keys", t, c, keep_head=False)),
    ("chpasswd-pairs", _chpasswd),
    ("xml-elements", lambda t, c: _sub(_ELEMENT, "xml-elements", t, c)),
    ("authorization-headers", lambda t, c: _sub(_AUTH_HEADER, "authorization-headers", t, c)),
    ("bearer-credentials", lambda t, c: _sub(_BEARER, "bearer-credentials", t, c)),
    ("url-credentials", lambda t, c: _sub(_URL_CREDENTIALS, "url-credentials", t, c)),
    ("virtkit-tokens", lambda t, c: _sub(_VIRTKIT_TOKEN, "virtkit-tokens", t, c, keep_head=False)),
    ("password-hashes", lambda t, c: _sub(_HASH, "password-hashes", t, c, keep_head=False)),
    ("quoted-value", lambda t, c: _sub(_QUOTED, "key-values", t, c)),
    ("bare-value", lambda t, c: _sub(_BARE, "key-values", t, c)),
]


# The kinds counted (plural nouns on purpose: the manifest's own counts pass through redact()
# too, and a kind named like a secret key, "...token", would hide its own count).
KINDS = (
    "private-keys", "chpasswd-pairs", "xml-elements", "authorization-headers",
    "bearer-credentials", "url-credentials", "virtkit-tokens", "password-hashes", "key-values",
)  # fmt: skip


def redact(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with every secret replaced by ``(redacted)``, and how many of each kind were
    (``{"key-values": 2, "private-keys": 1}``); the values themselves are never kept."""
    counts: Counter[str] = Counter()
    for _name, rule in _RULES:
        text = rule(text, counts)
    return text, dict(sorted(counts.items()))


__all__ = ["KINDS", "REDACTED", "redact"]
