"""API bearer tokens: the token file format, roles, and checking a presented token."""

from __future__ import annotations

import pytest

from api.server import is_loopback, token_store
from api.tokens import ANONYMOUS, Principal, TokenStore, hash_token, parse_token_file, token_line
from config.settings import ApiSettings
from errors import ConfigError

SUBMIT = "submit-token-1234567890abcdef"
READ = "read-token-1234567890abcdef00"


def store() -> TokenStore:
    return TokenStore(parse_token_file([token_line(SUBMIT, "submit", "svc-a"), token_line(READ, "read", "svc-b")]))


def test_a_token_line_holds_the_hash_role_and_name_but_never_the_token() -> None:
    """`sha256:<hex> <role> <name>`; the token itself is not in it."""
    line = token_line(SUBMIT, "submit", "svc-a")
    assert line == f"{hash_token(SUBMIT)} submit svc-a"
    assert SUBMIT not in line and line.startswith("sha256:") and len(line.split()[0]) == len("sha256:") + 64


def test_known_tokens_map_to_their_principal_and_others_to_none() -> None:
    """Each token gets its own name and role; unknown, empty, oversized or spaced tokens get None."""
    tokens = store()
    assert tokens.authenticate(SUBMIT) == Principal("svc-a", "submit")
    assert tokens.authenticate(READ) == Principal("svc-b", "read")
    for bad in ("", SUBMIT + "x", SUBMIT[:-1], "x" * 10_000, f"{SUBMIT} ", "é" * 20):
        assert tokens.authenticate(bad) is None


def test_submit_implies_read_and_read_allows_only_read() -> None:
    """Role submit may trigger and read; role read may only read."""
    assert Principal("a", "submit").allows("submit") and Principal("a", "submit").allows("read")
    assert Principal("b", "read").allows("read") and not Principal("b", "read").allows("submit")
    assert ANONYMOUS.allows("submit")


@pytest.mark.parametrize(
    "line",
    [
        f"plain-{SUBMIT} submit leaked",
        f"sha256:{'A' * 64} submit upper-hex",
        f"sha256:{'0' * 63} submit short",
        f"md5:{'0' * 64} submit other-scheme",
        f"sha256:{'0' * 64} admin bad-role",
        f"sha256:{'0' * 64} submit bad name",
        f"sha256:{'0' * 64} submit",
    ],
)
def test_a_bad_line_is_refused_by_number_without_echoing_it(line: str) -> None:
    """A malformed line stops the load with its line number; its content (maybe a token) is not repeated."""
    with pytest.raises(ConfigError) as caught:
        parse_token_file(["# comment", "", line])
    assert "line 3" in caught.value.message
    assert SUBMIT not in caught.value.message and line not in caught.value.message


def test_an_empty_file_and_a_repeated_name_are_refused() -> None:
    """A file without tokens, or with one name twice, is a configuration error."""
    with pytest.raises(ConfigError, match="no token"):
        parse_token_file(["# only comments", ""])
    with pytest.raises(ConfigError, match="twice"):
        parse_token_file([token_line(SUBMIT, "submit", "same"), token_line(READ, "read", "same")])


@pytest.mark.parametrize(
    ("token", "role", "name"), [("short", "read", "a"), (SUBMIT, "admin", "a"), (SUBMIT, "read", "")]
)
def test_token_line_refuses_weak_tokens_unknown_roles_and_bad_names(token: str, role: str, name: str) -> None:
    """hash-token's checks: at least 16 visible characters, a known role, a plain name."""
    with pytest.raises(ValueError):
        token_line(token, role, name)


def test_the_server_needs_a_token_file_unless_insecure_on_loopback() -> None:
    """No token file: refused; --insecure-no-auth: only on loopback addresses."""
    with pytest.raises(ConfigError, match="token file"):
        token_store(ApiSettings(), insecure_no_auth=False)
    assert token_store(ApiSettings(host="127.0.0.1"), insecure_no_auth=True) is None
    assert token_store(ApiSettings(host="::1"), insecure_no_auth=True) is None
    for host in ("0.0.0.0", "10.1.2.3", "api.example.com"):  # noqa: S104 - refused addresses
        with pytest.raises(ConfigError, match="loopback"):
            token_store(ApiSettings(host=host), insecure_no_auth=True)
    assert is_loopback("localhost") and is_loopback("127.8.9.10") and not is_loopback("::")


@pytest.mark.parametrize("weak", ["passwordpassword", "passwordpasswordpassword", "a" * 40, "abc"])
def test_hash_token_refuses_a_token_that_cannot_hold_128_bits(weak: str) -> None:
    """Too short for its characters, or too repetitive: refused; a secrets.token_urlsafe(16) or token_hex(16) is not."""
    with pytest.raises(ValueError, match=r"22-512|128 bits"):
        token_line(weak, "read", "svc")
    for strong in ("Zq3_kT9vXw2LmP8sRb5nYc", "3f9a1c7e5b2d4f60a8c6e1b9d7f3a5c2"):
        assert token_line(strong, "read", "svc")


def test_a_short_token_is_never_accepted_whatever_the_file_says() -> None:
    """A line made from a 3-character token by hand: the server still refuses the token."""
    tokens = TokenStore(parse_token_file([f"{hash_token('abc')} submit short"]))
    assert tokens.authenticate("abc") is None
