"""The thin I/O edge to the SMS Provider: pywinrm's transport, one Protocol per thread.

Bytes go through `protocol.transport.send_message`, pywinrm's public transport object: it still
does authentication and message encryption, but unlike `Protocol.send_message` it does not
re-parse HTTP error bodies with the stdlib's unguarded XML parser. Error bodies are read here
with the WS-Man layer's parser instead (`worker.provider.classify`).

pywinrm's Protocol holds one `requests.Session` and is not thread-safe (shared across threads
over NTLM, every call failed), so each thread owns one per provider. After any failure other
than a SOAP fault the session is closed and rebuilt: an NTLM session whose keep-alive
connection the server dropped keeps failing (HTTP 400) until it is, and a failed priming POST
would leave it sending plaintext.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from winrm.protocol import Protocol

from config.settings import ProviderSettings, check_basic_password
from errors import ConfigError
from worker.provider.classify import (
    classify_exception,
    fault_in_reply,
    fault_to_error,
    http_error_reply,
    http_status_error,
)
from worker.provider.kerberos import KerberosCredentials, kerberos_target, process_credentials

__all__ = ["ProviderTransport"]


# pyspnego logs every NTLM / SPNEGO / CredSSP token at DEBUG ("NTLM step output: <base64>"). An
# NTLM AUTHENTICATE message next to the CHALLENGE it answers is a NetNTLMv2 hash anyone reading
# the log can crack offline: a worker run with --loglevel DEBUG must not write it.
_HANDSHAKE_LOGGER = "spnego"
_HANDSHAKE_LOG_MIN_LEVEL = logging.INFO
# pywinrm's vendored requests-kerberos logs the Authorization header (a Kerberos AP-REQ, replayable
# for minutes) at DEBUG, and every GSS failure with a traceback at ERROR: we classify those ourselves.
_KERBEROS_LOGGER = "winrm.vendor.requests_kerberos.kerberos_"
# A call with less time than this left is not worth a socket: it would time out before an answer.
_MIN_SOCKET_TIMEOUT_S = 0.05


def _quiet_handshake_logging() -> None:
    logger = logging.getLogger(_HANDSHAKE_LOGGER)
    if logger.level < _HANDSHAKE_LOG_MIN_LEVEL:  # NOTSET (inherit the root's DEBUG) included
        logger.setLevel(_HANDSHAKE_LOG_MIN_LEVEL)
    logging.getLogger(_KERBEROS_LOGGER).setLevel(logging.CRITICAL + 1)


@dataclass
class _Slot:
    protocol: Protocol | None = None
    # Kerberos: the logon the session was built on; a renewal makes the thread start a new session.
    logon: int = 0


class ProviderTransport:
    """Send WS-Man envelopes to one SMS Provider; every failure comes out as a `RefreshError`."""

    def __init__(self, site_code: str, provider: ProviderSettings) -> None:
        self.site_code = site_code
        self.provider = provider
        self._local = threading.local()
        _quiet_handshake_logging()

    def __repr__(self) -> str:
        return f"ProviderTransport(site_code={self.site_code!r}, endpoint={self.provider.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return self.provider.endpoint

    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = _Slot()
            self._local.slot = slot
        return slot

    def _kerberos(self) -> KerberosCredentials:
        p = self.provider
        return process_credentials(
            p.username,
            keytab=p.keytab_file,
            password=None if p.keytab_file else p.secret_password,
            password_file=None if p.keytab_file else p.password_file,
        )

    def _build_protocol(self) -> Protocol:
        p = self.provider
        if p.ca_trust_path is not None and not p.ca_trust_path.is_file():
            raise ConfigError(f"ca_trust_path {str(p.ca_trust_path)!r} is not a readable file")
        credentials = self._kerberos_arguments() if p.transport == "kerberos" else self._password_arguments()
        return Protocol(
            endpoint=p.endpoint,
            # Our transport names are pywinrm's ("certificate" needs no username or password).
            transport=p.transport,
            cert_pem=str(p.cert_pem) if p.cert_pem else None,
            cert_key_pem=str(p.cert_key_pem) if p.cert_key_pem else None,
            server_cert_validation=p.server_cert_validation,
            # None = trust only the system store; a path = our CA bundle. Never the env-var lookup.
            ca_trust_path=str(p.ca_trust_path) if p.ca_trust_path else None,  # type: ignore[arg-type]
            read_timeout_sec=p.read_timeout_s,
            operation_timeout_sec=p.operation_timeout_s,
            message_encryption=p.message_encryption,
            # proxy=None skips requests' proxy-environment lookup on every call (~20% client CPU).
            proxy=None,
            **credentials,
        )

    def _password_arguments(self) -> dict[str, Any]:
        p = self.provider
        password = p.secret_password() if p.transport != "certificate" else None
        if p.transport == "basic" and password is not None:
            try:
                check_basic_password(password)  # a password file is read only now
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return {"username": p.username or None, "password": password}

    def _kerberos_arguments(self) -> dict[str, Any]:
        """pywinrm's own Kerberos transport, on the tickets `KerberosCredentials` put in the cache."""
        p = self.provider
        target = kerberos_target(p.endpoint, p.spn)
        credentials = self._kerberos()
        credentials.ensure(target)
        self._slot().logon = credentials.logons
        # The principal: pykerberos picks its tickets from the cache by it; no password.
        return {"username": p.username, "service": target.service, "kerberos_hostname_override": target.host}

    def _renew_kerberos(self, slot: _Slot) -> None:
        """Log on again when the tickets near their end; a session built on the old logon is closed,
        so the next request authenticates afresh instead of failing when its ticket expires."""
        p = self.provider
        credentials = self._kerberos()
        credentials.ensure(kerberos_target(p.endpoint, p.spn))
        if slot.protocol is not None and slot.logon != credentials.logons:
            self.reset()

    def protocol(self) -> Protocol:
        slot = self._slot()
        if slot.protocol is not None and self.provider.transport == "kerberos":
            try:
                self._renew_kerberos(slot)
            except Exception as exc:
                raise _typed(exc) from None
        if slot.protocol is None:
            try:
                slot.protocol = self._build_protocol()
            except Exception as exc:
                raise _typed(exc) from None
        return slot.protocol

    @staticmethod
    def _skip_environment_lookups(protocol: Protocol) -> None:
        """Once pywinrm has built its session: no proxy or CA lookup in the environment per request.

        pywinrm resolves the environment once, when it builds the session (proxy=None: no proxy
        at all; the CA bundle and certificate settings are then fixed on the session), but
        requests looks at the environment's proxy settings again on every send (~2% of a
        worker's CPU per refresh) and would only confirm "no proxy".
        """
        session = getattr(protocol.transport, "session", None)
        if session is not None and session.trust_env:
            session.trust_env = False

    def reset(self) -> None:
        """Close this thread's session so the next call authenticates on a fresh connection."""
        slot = self._slot()
        if slot.protocol is not None:
            try:
                slot.protocol.transport.close_session()
            finally:
                slot.protocol = None

    def close(self) -> None:
        self.reset()

    def send(self, envelope: bytes, *, read_timeout_s: int | None = None, timeout_s: float | None = None) -> bytes:
        """One round trip: the reply bytes. SOAP faults and transport failures raise RefreshErrors.

        `read_timeout_s` replaces the provider's read timeout for this call only (an operation
        the server may take longer over, e.g. a boot image's refresh). Every socket operation
        (connect, each read) waits at most that, or `timeout_s` when it is shorter (what is left of
        the attempt's time): a provider that stops answering ends the call as a `timeout` by then.
        """
        protocol = self.protocol()
        winrm_transport = protocol.transport
        usual_read_timeout = winrm_transport.read_timeout_sec
        read_s = read_timeout_s if read_timeout_s is not None else usual_read_timeout
        if timeout_s is not None and read_s is not None:
            read_s = max(_MIN_SOCKET_TIMEOUT_S, min(read_s, timeout_s))  # type: ignore[assignment]
        if read_s != usual_read_timeout:
            # The Protocol is this thread's own: changing it for one call affects no other. pywinrm
            # declares an int; requests, which it hands the value to, takes any number of seconds.
            winrm_transport.read_timeout_sec = read_s
        try:
            answer: bytes = winrm_transport.send_message(envelope)
        except Exception as exc:
            failure = exc
        else:
            self._skip_environment_lookups(protocol)
            return answer
        finally:
            winrm_transport.read_timeout_sec = usual_read_timeout
        reply = http_error_reply(failure)
        fault = fault_in_reply(reply.body) if reply is not None else None
        if reply is not None and fault is not None:
            # A SOAP fault is a healthy conversation: keep the session.
            raise fault_to_error(fault, http_status=reply.status) from None
        # Anything else broke the conversation (connection, TLS, 4xx/5xx, auth): reset, then
        # raise the typed error. `from None`: requests' chained errors may carry URLs.
        self.reset()
        raise (http_status_error(reply.status) if reply is not None else _typed(failure)) from None


def _typed(exc: Exception) -> BaseException:
    """The typed error for a library exception; an unknown one is a bug and stays itself."""
    error = classify_exception(exc)
    return exc if error is None else error
