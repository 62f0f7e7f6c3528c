"""Bearer tokens for the HTTP API: a file of token hashes, roles, constant-time checks (pure).

The file holds one line per token, never the token itself:

    # comment
    sha256:<64 hex digits> <role> <name>

`role` is `submit` (may trigger refreshes and bulk jobs; implies read) or `read`. `name` names
the caller (1-64 of `A-Z a-z 0-9 _ . -`): it scopes Idempotency-Keys. A presented token is
hashed with SHA-256 and compared with `hmac.compare_digest` against every entry, always all of
them, so the time taken does not depend on which entry (if any) matches. Tokens are random
secrets, not passwords: one fast hash is the right tool (a slow KDF would only slow requests).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
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
    "parse_token_file",
    "token_line",
]

Role = Literal["submit", "read"]
ROLES: Final[tuple[Role, ...]] = ("submit", "read")
HASH_SCHEME: Final = "sha256"
MAX_TOKEN_CHARS: Final = 512
MIN_TOKEN_CHARS: Final = 16
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
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not _NAME.fullmatch(name):
        raise ValueError("name must be 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)")
    return f"{hash_token(token)} {role} {name}"


def parse_token_file(lines: Iterable[str], *, source: str = "token file") -> list[TokenEntry]:
    """Entries of a token file; a bad line is a ConfigError naming its number (never its content)."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry = _parse_line(line, number, source)
        if entry.principal.name in names:
            raise ConfigError(f"{source} line {number}: the name {entry.principal.name!r} is used twice")
        names.add(entry.principal.name)
        entries.append(entry)
        if len(entries) > _MAX_ENTRIES:
            raise ConfigError(f"{source}: more than {_MAX_ENTRIES} tokens")
    if not entries:
        raise ConfigError(f"{source} holds no token")
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

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise ConfigError(f"cannot read the API token file {str(path)!r}: {why}") from None
        return cls(parse_token_file(text.splitlines(), source=f"token file {str(path)!r}"))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of `token`, or None; compares with every entry whatever matches."""
        if not (0 < len(token) <= MAX_TOKEN_CHARS) or not _TOKEN.fullmatch(token):
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found
