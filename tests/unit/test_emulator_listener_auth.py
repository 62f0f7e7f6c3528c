"""The listener's authentication decisions (emulator.listener_auth), without sockets."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest
import spnego

from emulator.listener.auth import NTLM_USER_FILE_ENV, NtlmUserStore
from emulator.listener.connection_auth import AuthResult, ConnectionAuth, ListenerAuth
from emulator.settings import EmulatorSettings

_USER = "LAB\\unit-listener"
_PASSWORD = "Listener-Pa55word"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _auth(*, tls: bool = False, **overrides: Any) -> ListenerAuth:
    settings = EmulatorSettings(username=_USER, password=_PASSWORD, **overrides)
    return ListenerAuth(settings, tls_binding=b"binding" if tls else None)


@pytest.fixture
def ntlm_user(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test account registered for pyspnego's NTLM acceptor (a private user file)."""
    monkeypatch.setenv(NTLM_USER_FILE_ENV, os.environ.get(NTLM_USER_FILE_ENV, ""))
    store = NtlmUserStore()
    store.register(_USER, _PASSWORD)
    yield
    store.cleanup()


def test_basic_over_plain_http_is_refused_unless_unencrypted_is_allowed() -> None:
    """Without AllowUnencrypted, Basic over HTTP is a 401 offering Negotiate only."""
    refused = _auth().authenticate(ConnectionAuth(), _basic(_USER, _PASSWORD), encrypted=False)
    assert refused == AuthResult(None, "auth_basic_refused", 401, ("Negotiate",))
    allowed = _auth(allow_unencrypted=True).authenticate(ConnectionAuth(), _basic(_USER, _PASSWORD), encrypted=False)
    assert allowed == AuthResult(_USER)


def test_basic_over_tls_checks_the_password() -> None:
    """Over HTTPS Basic is usable; a wrong password is a 401 offering both schemes."""
    auth = _auth(tls=True)
    assert auth.authenticate(ConnectionAuth(), _basic(_USER, _PASSWORD), encrypted=False).user == _USER
    failed = auth.authenticate(ConnectionAuth(), _basic(_USER, "wrong"), encrypted=False)
    assert failed == AuthResult(None, "auth_failures", 401, ("Negotiate", 'Basic realm="WSMAN"'))


@pytest.mark.parametrize(
    ("authorization", "encrypted", "expected"),
    [
        (None, False, AuthResult(None, "auth_challenges", 401, ("Negotiate",))),
        (None, True, AuthResult(None, "encrypted_without_context", 400)),
        ("Kerberos abc=", False, AuthResult(None, "auth_failures", 401, ("Negotiate",))),
        ("Negotiate bm90IGEgdG9rZW4=", False, AuthResult(None, "auth_failures", 401, ("Negotiate",))),
    ],
)
def test_requests_without_usable_credentials_get_a_challenge_or_400(
    authorization: str | None, encrypted: bool, expected: AuthResult
) -> None:
    """No header: a challenge (or 400 for a sealed body); unknown schemes and garbage tokens: 401."""
    connection = ConnectionAuth()
    assert _auth().authenticate(connection, authorization, encrypted=encrypted) == expected
    assert connection.negotiate is None


@pytest.mark.usefixtures("ntlm_user")
def test_an_ntlm_handshake_authenticates_the_connection_for_later_requests() -> None:
    """NEGOTIATE gets a 401 challenge, AUTHENTICATE the user; later requests need no header."""
    auth, connection = _auth(), ConnectionAuth()
    client = spnego.client(_USER, _PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    negotiate = base64.b64encode(client.step() or b"").decode()
    challenge = auth.authenticate(connection, f"Negotiate {negotiate}", encrypted=False)
    assert (challenge.user, challenge.status, challenge.counter) == (None, 401, "ntlm_challenges")
    assert challenge.www_authenticate is not None
    token = base64.b64decode(challenge.www_authenticate[0].removeprefix("Negotiate "))
    authenticate = base64.b64encode(client.step(token) or b"").decode()
    done = auth.authenticate(connection, f"Negotiate {authenticate}", encrypted=False)
    assert (done.user, done.counter) == (_USER, "ntlm_authenticated")
    assert auth.authenticate(connection, None, encrypted=True) == AuthResult(_USER)
    assert connection.established is not None
