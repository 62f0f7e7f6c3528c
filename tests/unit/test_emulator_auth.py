"""Unit tests of emulator.auth: Basic checks, the NTLM user file and the NTLM acceptor (in memory)."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator

import pytest
import spnego

from emulator.listener.auth import (
    NTLM_USER_FILE_ENV,
    AuthFailedError,
    NtlmAcceptor,
    NtlmUserStore,
    check_basic,
    parse_authorization,
)

_USER = "LAB\\unit-user"
_PASSWORD = "Unit-Pa55word"


@pytest.fixture
def user_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[NtlmUserStore]:
    """A private user store; NTLM_USER_FILE is restored afterwards."""
    monkeypatch.setenv(NTLM_USER_FILE_ENV, os.environ.get(NTLM_USER_FILE_ENV, ""))
    store = NtlmUserStore()
    yield store
    store.cleanup()


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_accepts_the_right_credentials_case_insensitively() -> None:
    """The configured account matches whatever the case of its name."""
    assert check_basic(_basic("lab\\UNIT-USER", _PASSWORD), username=_USER, password=_PASSWORD) == _USER


@pytest.mark.parametrize("token", [_basic(_USER, "wrong"), _basic("LAB\\other", _PASSWORD), "%%%", _basic(_USER, "")])
def test_basic_rejects_wrong_credentials_without_revealing_them(token: str) -> None:
    """Wrong password, unknown user or garbage raise AuthFailedError whose text holds no secret."""
    with pytest.raises(AuthFailedError) as raised:
        check_basic(token, username=_USER, password=_PASSWORD)
    assert _PASSWORD not in str(raised.value)


def test_parse_authorization_splits_scheme_and_token() -> None:
    """Schemes are lower-cased; empty or tokenless headers give None; the token is not in repr."""
    header = parse_authorization("Negotiate TlRMTVNTUAAB")
    assert header is not None and header.scheme == "negotiate" and header.token == "TlRMTVNTUAAB"
    assert "TlRM" not in repr(header)
    assert parse_authorization("Basic") is None
    assert parse_authorization(None) is None


def test_user_file_is_private_and_reference_counted(user_store: NtlmUserStore) -> None:
    """The file is 0600, named by NTLM_USER_FILE, and keeps a user until its last unregistration."""
    user_store.register(_USER, _PASSWORD)
    user_store.register(_USER, _PASSWORD)
    path = user_store.path
    assert path is not None and os.environ[NTLM_USER_FILE_ENV] == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == f"LAB:unit-user:{_PASSWORD}\n"
    user_store.unregister(_USER)
    with open(path, encoding="utf-8") as handle:
        assert "unit-user" in handle.read()
    user_store.unregister(_USER)
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == ""


def test_user_file_refuses_a_second_password_for_one_user(user_store: NtlmUserStore) -> None:
    """One process cannot register the same account with two passwords at once."""
    user_store.register(_USER, _PASSWORD)
    with pytest.raises(ValueError, match="another password") as raised:
        user_store.register("lab\\UNIT-user", "Different-1")
    assert "Different-1" not in str(raised.value)


def test_user_file_refuses_characters_the_format_cannot_hold(user_store: NtlmUserStore) -> None:
    """A colon or line break in the password would corrupt DOMAIN:USER:PASSWORD lines."""
    with pytest.raises(ValueError, match="cannot contain"):
        user_store.register(_USER, "pass:word")


def _handshake(acceptor: NtlmAcceptor, password: str) -> spnego.ContextProxy:
    client = spnego.client(_USER, password, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    challenge = acceptor.step(client.step() or b"")
    assert challenge is not None
    assert acceptor.step(client.step(challenge) or b"") is None
    return client


def test_ntlm_acceptor_authenticates_and_seals_both_ways(user_store: NtlmUserStore) -> None:
    """A pyspnego client completes the handshake; messages round-trip sealed in both directions."""
    user_store.register(_USER, _PASSWORD)
    acceptor = NtlmAcceptor()
    client = _handshake(acceptor, _PASSWORD)
    assert acceptor.complete and acceptor.user == _USER
    sealed = client.wrap(b"request", encrypt=True).data
    assert acceptor.unwrap(sealed[:16], sealed[16:]) == b"request"
    assert client.unwrap(b"".join(acceptor.wrap(b"reply"))).data == b"reply"


def test_ntlm_acceptor_rejects_a_wrong_password(user_store: NtlmUserStore) -> None:
    """The AUTHENTICATE message of a wrong password raises AuthFailedError and leaves no context."""
    user_store.register(_USER, _PASSWORD)
    acceptor = NtlmAcceptor()
    with pytest.raises(AuthFailedError):
        _handshake(acceptor, "Wrong-Pa55word")
    assert not acceptor.complete
    with pytest.raises(AuthFailedError):
        acceptor.wrap(b"nothing to seal with")


def test_ntlm_acceptor_rejects_tokens_out_of_order(user_store: NtlmUserStore) -> None:
    """An AUTHENTICATE without a NEGOTIATE first, or a non-NTLM token, is refused."""
    user_store.register(_USER, _PASSWORD)
    with pytest.raises(AuthFailedError):
        NtlmAcceptor().step(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\x00" * 60)
    with pytest.raises(AuthFailedError):
        NtlmAcceptor().step(b"\x60\x82garbage")


def test_basic_accepts_an_extra_username_and_returns_it_as_configured() -> None:
    """extra_usernames (denied users) authenticate with the same password; the configured spelling is returned."""
    token = _basic("lab\\READER", _PASSWORD)
    assert check_basic(token, username=_USER, password=_PASSWORD, extra_usernames=("LAB\\reader",)) == "LAB\\reader"
    with pytest.raises(AuthFailedError):
        check_basic(
            _basic("LAB\\reader", "wrong"), username=_USER, password=_PASSWORD, extra_usernames=("LAB\\reader",)
        )


def test_acceptor_takes_ntlm_wrapped_in_spnego_and_seals_both_ways(user_store: NtlmUserStore) -> None:
    """A SPNEGO (Negotiate) client authenticates; the last leg returns SPNEGO's final token with the user set."""
    user_store.register(_USER, _PASSWORD)
    acceptor = NtlmAcceptor()
    client = spnego.client(_USER, _PASSWORD, hostname="emulator", protocol="negotiate")
    first = client.step() or b""
    assert first[:1] == b"\x60"  # a GSS-API InitialContextToken, not raw NTLMSSP
    challenge = acceptor.step(first)
    assert challenge is not None and not acceptor.complete
    final = acceptor.step(client.step(challenge) or b"")
    assert acceptor.complete and acceptor.user == _USER
    assert final is not None
    client.step(final)
    assert client.complete
    sealed = client.wrap(b"request", encrypt=True).data
    assert acceptor.unwrap(sealed[:16], sealed[16:]) == b"request"
    assert client.unwrap(b"".join(acceptor.wrap(b"reply"))).data == b"reply"


def test_a_new_handshake_replaces_a_completed_context(user_store: NtlmUserStore) -> None:
    """After authentication an initial token starts over; any other token is refused."""
    user_store.register(_USER, _PASSWORD)
    acceptor = NtlmAcceptor()
    _handshake(acceptor, _PASSWORD)
    with pytest.raises(AuthFailedError):
        acceptor.step(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\x00" * 60)
    assert not acceptor.complete
    _handshake(acceptor, _PASSWORD)
    assert acceptor.complete
