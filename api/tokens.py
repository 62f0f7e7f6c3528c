"""Bearer tokens for the HTTP API: a file of token hashes, roles, constant-time checks (pure).

The file holds one line per token, never the token itself:

    # comment
    sha256:<64 hex digits> <role> <name>

`role` is `submit` (may trigger refreshes and bulk jobs; implies read) or `read`. `name` names
the caller (1-64 of `A-Z a-z 0-9 _ . -`): it scopes request ids and Idempotency-Keys. Names and
hashes are unique in a file. A presented token is hashed with SHA-256 and compared with
`hmac.compare_digest` against every entry, always all of them, so the time taken does not depend
on which entry (if any) matches. Tokens are random secrets of at least 128 bits, not passwords:
one fast hash is the right tool (a slow KDF would only slow requests). `token_line` (`hash-token`)
refuses a token that cannot hold 128 bits, and a presented token shorter than that is never
accepted, whatever the file says.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from errors import ConfigError

__all__ = [
    "ANONYMOUS",
    "MAX_TOKEN_CHARS",
    "ROLES",
    "Authenticator",
    "Principal",
    "Role",
    "TokenEntry",
    "TokenStore",
    "hash_token",
    "parse_lines",
    "parse_token_file",
    "token_line",
]

Role = Literal["submit", "read"]
ROLES: Final[tuple[Role, ...]] = ("submit", "read")
HASH_SCHEME: Final = "sha256"
MAX_TOKEN_CHARS: Final = 512
# 22 characters of base64url hold 132 bits: nothing shorter can hold 128.
MIN_TOKEN_CHARS: Final = 22
MIN_TOKEN_BITS: Final = 128
# A random token's characters are spread out; "passwordpassword..." is not (about 2.8 bits each).
_MIN_BITS_PER_CHAR: Final = 3.0
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# RFC 6750 b64token, a little wider: any visible ASCII but a space.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_MAX_ENTRIES: Final = 10_000


@dataclass(frozen=True)
class Principal:
    """Who called: the token's name and role."""

    name: str
    role: Role

    def allows(self, role: Role) -> bool:
        return self.role in (role, "submit")


# Every request is this caller under --insecure-no-auth (loopback only).
ANONYMOUS: Final = Principal("anonymous", "submit")


class Authenticator(Protocol):
    """Maps a presented bearer token to its principal (TokenStore, or api.token_file.TokenFile)."""

    def authenticate(self, token: str) -> Principal | None: ...


@dataclass(frozen=True)
class TokenEntry:
    digest: bytes
    principal: Principal


def hash_token(token: str) -> str:
    """`sha256:<hex>` of a token (what the file stores)."""
    return f"{HASH_SCHEME}:{hashlib.sha256(token.encode()).hexdigest()}"


def token_line(token: str, role: str, name: str) -> str:
    """The token file line for a token; raises ValueError for a weak token, a bad role or name."""
    if not (MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS) or not _TOKEN.fullmatch(token):
        raise ValueError(f"a token must be {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} visible ASCII characters, no spaces")
    if not _looks_random(token):
        raise ValueError(
            f"this token cannot hold {MIN_TOKEN_BITS} bits (too short for its characters, or too repetitive):"
            " use e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not _NAME.fullmatch(name):
        raise ValueError("name must be 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)")
    return f"{hash_token(token)} {role} {name}"


def _looks_random(token: str) -> bool:
    """At least 128 bits by the size of its alphabet, and characters spread like a random string's."""
    pool = sum(
        size
        for present, size in (
            (any(c.islower() for c in token), 26),
            (any(c.isupper() for c in token), 26),
            (any(c.isdigit() for c in token), 10),
            (any(not c.isalnum() for c in token), 32),
        )
        if present
    )
    counts = Counter(token)
    spread = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return len(token) * math.log2(pool) >= MIN_TOKEN_BITS and spread >= _MIN_BITS_PER_CHAR


def parse_lines(lines: Iterable[str], *, source: str = "token file") -> tuple[list[TokenEntry], list[str]]:
    """The good entries of a token file and a message per bad line (by number, never its content).

    A line is bad when malformed or when it repeats an earlier line's name or hash (a second
    name for one token would silently change its role).
    """
    entries: list[TokenEntry] = []
    errors: list[str] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte order mark some editors write
        if not line or line.startswith("#"):
            continue
        try:
            entry = _parse_line(line, number, source)
        except ConfigError as exc:
            errors.append(exc.message)
            continue
        if entry.principal.name in names:
            errors.append(f"{source} line {number}: the name {entry.principal.name!r} is used twice")
        elif entry.digest in digests:
            errors.append(f"{source} line {number}: the same token hash as an earlier line")
        elif len(entries) >= _MAX_ENTRIES:
            errors.append(f"{source}: more than {_MAX_ENTRIES} tokens")
            break
        else:
            names.add(entry.principal.name)
            digests.add(entry.digest)
            entries.append(entry)
    if not entries and not errors:
        errors.append(f"{source} holds no token")
    return entries, errors


def parse_token_file(lines: Iterable[str], *, source: str = "token file") -> list[TokenEntry]:
    """Entries of a token file; a bad line is a ConfigError naming its number (never its content)."""
    entries, errors = parse_lines(lines, source=source)
    if errors:
        raise ConfigError(errors[0])
    return entries


def _parse_line(line: str, number: int, source: str) -> TokenEntry:
    parts = line.split()
    if len(parts) != 3:
        raise ConfigError(f"{source} line {number}: expected `sha256:<hex> <role> <name>`")
    hashed, role, name = parts
    scheme, _, hex_digest = hashed.partition(":")
    if scheme != HASH_SCHEME or not _HEX_DIGEST.fullmatch(hex_digest):
        raise ConfigError(f"{source} line {number}: the hash must be sha256: and 64 lower-case hex digits")
    if role not in ROLES:
        raise ConfigError(f"{source} line {number}: role must be one of {', '.join(ROLES)}")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{source} line {number}: name must be 1-64 of A-Z a-z 0-9 _ . -")
    checked_role: Role = "submit" if role == "submit" else "read"
    return TokenEntry(bytes.fromhex(hex_digest), Principal(name, checked_role))


class TokenStore:
    """The loaded entries; `authenticate` maps a presented token to its principal."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = tuple(entries)

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of `token`, or None; compares with every entry whatever matches."""
        if not (MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS) or not _TOKEN.fullmatch(token):
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found
