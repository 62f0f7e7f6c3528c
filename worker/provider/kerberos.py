"""The worker's Kerberos credentials: acquired in-process, kept fresh, every failure classified.

pywinrm's Kerberos transport (its vendored requests-kerberos over pykerberos) takes tickets from
the process's credential cache and a principal name; it cannot log on by itself. This module
puts them there, with python-gssapi and never `kinit` in a shell:

* keytab (preferred: no password on disk): the keys come from the keytab (a client keytab given
  through the GSS credential store, nothing process-wide);
* password (`password_file`, read at use time): gss_acquire_cred_with_password.

Either way the logon is repeated, into a fresh cache swapped in whole, when a third of the
ticket's lifetime is left, and the transport then starts new sessions: no request is made with a
ticket about to expire.

The cache is a MEMORY cache private to the process (KRB5CCNAME): tickets never touch the disk, and
nothing of the machine's (`/tmp/krb5cc_*`) is read. One Kerberos account per worker process.

Before a session is built, `ensure(target)` also asks for the service ticket of the provider's
SPN, so a wrong SPN, an unknown account, a wrong or expired password, clock skew or an unreachable
KDC fail there with a message an administrator can act on (docs/kerberos.md), before any HTTP.
Messages carry the principal and the SPN (configuration), never a password or a ticket.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from errors import AuthError, ConfigError, ConnectError, RefreshError

__all__ = [
    "CCACHE_ENV",
    "REFUSED_LOGON_HOLD_S",
    "KerberosCredentials",
    "KerberosTarget",
    "classify_gss_error",
    "forget_logons",
    "kerberos_target",
    "process_ccache",
    "process_credentials",
]

CCACHE_ENV: Final = "KRB5CCNAME"
_CCACHE: Final = f"MEMORY:sccm-refresh-{os.getpid()}"
_FRESH_CACHES: Final = itertools.count(1)
# A logon the KDC refused is not tried again for this long (unless its keytab or password file changes).
REFUSED_LOGON_HOLD_S: Final = 60.0
# Renew when this share of the ticket's lifetime is left (MIT's own client-keytab refresh starts at half).
_RENEW_AT_SHARE_LEFT: Final = 1 / 3

# libkrb5 error codes as GSS minor statuses (com_err table "krb5", base -1765328384, unsigned here).
_KRB5_BASE: Final = 2529638912
KDC_ERR_C_PRINCIPAL_UNKNOWN: Final = _KRB5_BASE + 6
KDC_ERR_S_PRINCIPAL_UNKNOWN: Final = _KRB5_BASE + 7
KDC_ERR_CLIENT_REVOKED: Final = _KRB5_BASE + 18
KDC_ERR_KEY_EXPIRED: Final = _KRB5_BASE + 23
KDC_ERR_PREAUTH_FAILED: Final = _KRB5_BASE + 24
KRB_AP_ERR_BAD_INTEGRITY: Final = _KRB5_BASE + 31
KRB_AP_ERR_TKT_EXPIRED: Final = _KRB5_BASE + 32
KRB_AP_ERR_SKEW: Final = _KRB5_BASE + 37
KRB5_KDC_UNREACH: Final = _KRB5_BASE + 156
KRB5_FCC_NOFILE: Final = _KRB5_BASE + 195
KRB5_REALM_CANT_RESOLVE: Final = _KRB5_BASE + 220
KRB5_KT_NOTFOUND: Final = _KRB5_BASE + 173

log = logging.getLogger(__name__)

PasswordSource = Callable[[], str]


@dataclass(frozen=True)
class KerberosTarget:
    """The provider's SPN, split as pywinrm wants it: `service`/`host`."""

    service: str
    host: str

    @property
    def spn(self) -> str:
        return f"{self.service}/{self.host}"


def kerberos_target(endpoint: str, spn: str | None) -> KerberosTarget:
    """The SPN override (`HTTP/sccm01.corp.example`, realm dropped), else HTTP/<endpoint host>.

    Windows registers WinRM's SPN as HTTP/<host> for both HTTP and HTTPS listeners (WSMAN/<host>
    too; the HTTP one is what clients ask for), without the port unless set up so.
    """
    if spn:
        service, _, host = spn.split("@", 1)[0].partition("/")
        return KerberosTarget(service, host)
    endpoint_host = urlsplit(endpoint).hostname
    if not endpoint_host:
        raise ConfigError(f"cannot derive a Kerberos SPN from endpoint {endpoint!r}: set spn")
    return KerberosTarget("HTTP", endpoint_host)


# What each libkrb5 code means to an administrator: the error class (which says retry or not) and
# the message, formatted with {principal}, {spn} and {detail} (the library's own words).
_GSS_FAILURES: Final[dict[int, tuple[type[RefreshError], str]]] = {
    KRB5_KDC_UNREACH: (ConnectError, "Kerberos: cannot reach a KDC for {principal}'s realm ({detail}); will retry"),
    KRB5_REALM_CANT_RESOLVE: (
        ConnectError,
        "Kerberos: cannot find a KDC for {principal}'s realm ({detail}); will retry",
    ),
    KDC_ERR_S_PRINCIPAL_UNKNOWN: (
        ConfigError,
        "Kerberos: the KDC knows no service principal {spn}: register the SPN on the provider's "
        "computer account (setspn -S) or set the provider's spn to the one registered",
    ),
    KRB_AP_ERR_SKEW: (
        ConfigError,
        "Kerberos: clock skew too great between this worker and the KDC (more than the realm allows, "
        "5 minutes by default): synchronise the worker's clock (NTP)",
    ),
    KDC_ERR_C_PRINCIPAL_UNKNOWN: (AuthError, "Kerberos: the KDC knows no account {principal}: check the username"),
    KDC_ERR_PREAUTH_FAILED: (AuthError, "Kerberos: wrong password or stale keytab for {principal}"),
    KRB_AP_ERR_BAD_INTEGRITY: (AuthError, "Kerberos: wrong password or stale keytab for {principal}"),
    KDC_ERR_KEY_EXPIRED: (
        AuthError,
        "Kerberos: the password of {principal} has expired: change it, then the password file or keytab",
    ),
    KDC_ERR_CLIENT_REVOKED: (AuthError, "Kerberos: the account {principal} is disabled or locked out"),
    KRB5_FCC_NOFILE: (ConfigError, "Kerberos: the keytab holds no key for {principal}: export one (ktpass, ktutil)"),
    KRB5_KT_NOTFOUND: (ConfigError, "Kerberos: the keytab holds no key for {principal}: export one (ktpass, ktutil)"),
}


def classify_gss_error(exc: Exception, *, principal: str, target: KerberosTarget | None = None) -> RefreshError:
    """A python-gssapi error as the RefreshError an admin can act on (GSS minor = libkrb5 code)."""
    minor = getattr(exc, "min_code", None)
    error_class, template = _GSS_FAILURES.get(
        minor if isinstance(minor, int) else -1,
        (AuthError, "Kerberos: cannot get a ticket for {principal} to {spn}: {detail}"),
    )
    spn = target.spn if target is not None else "the provider's SPN"
    return error_class(template.format(principal=principal, spn=spn, detail=_gss_detail(exc)))


def _gss_detail(exc: Exception) -> str:
    """The library's own words, the minor part only (no credential is ever in them)."""
    gen_message = getattr(exc, "gen_message", None)
    if not callable(gen_message):
        return type(exc).__name__
    text = str(gen_message())
    return text.rsplit("Minor (", 1)[-1].split("): ", 1)[-1] if "Minor (" in text else text


class KerberosCredentials:
    """The process's Kerberos logon for one principal: acquire, check the SPN, renew."""

    def __init__(
        self,
        principal: str,
        *,
        keytab: Path | None,
        password: PasswordSource | None = None,
        password_file: Path | None = None,
    ) -> None:
        # `password` returns the password when called (a file is read at each logon); None: the keytab.
        self.principal = principal
        self.keytab = keytab
        self._password = password
        # The files a fix would change: a refused logon is tried again at once when one of them does.
        self._sources = tuple(path for path in (keytab, password_file) if path is not None)
        self._lock = threading.Lock()
        self._renew_after = 0.0  # monotonic; 0: not acquired yet
        self._checked_spns: set[str] = set()
        self._logons = 0
        self._refused: tuple[float, AuthError, tuple[object, ...]] | None = None

    def __repr__(self) -> str:
        source = f"keytab={str(self.keytab)!r}" if self.keytab else "password=<hidden>"
        return f"KerberosCredentials(principal={self.principal!r}, {source})"

    @property
    def logons(self) -> int:
        """How many times this process logged on: a session built before the last one is stale."""
        return self._logons

    @property
    def needs_renewal(self) -> bool:
        return time.monotonic() >= self._renew_after

    def ensure(self, target: KerberosTarget) -> bool:
        """Credentials valid for a while, and a ticket for `target`; True when they were (re)acquired."""
        with self._lock:
            if self.needs_renewal:
                self._log_on_unless_refused(target)
                return True
            if target.spn not in self._checked_spns:
                self._service_ticket(self._cached_credentials(), target)
                self._checked_spns.add(target.spn)
            return False

    def _log_on_unless_refused(self, target: KerberosTarget) -> None:
        """Log on; after the KDC refused the account (wrong or expired password, unknown, locked),
        answer the same refusal for REFUSED_LOGON_HOLD_S without asking again, unless the keytab
        or password file changed: every request of a queue retrying a bad password would count
        towards the domain's account lockout threshold."""
        stamp = self._source_stamp()
        if self._refused is not None:
            until, error, refused_stamp = self._refused
            if time.monotonic() < until and stamp == refused_stamp:
                raise AuthError(error.message)
            self._refused = None
        try:
            self._log_on(target)
        except AuthError as exc:
            self._refused = (time.monotonic() + REFUSED_LOGON_HOLD_S, exc, stamp)
            raise

    def _source_stamp(self) -> tuple[object, ...]:
        stamps: list[object] = []
        for path in self._sources:
            try:
                status = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(stamps)

    def _gss(self) -> Any:
        try:
            import gssapi  # noqa: PLC0415 - optional: only a Kerberos provider needs it
        except ImportError:
            raise ConfigError(
                "transport 'kerberos' needs the kerberos extra: pip install 'sccm-refresh[kerberos]' "
                "(python-gssapi and pykerberos, built against MIT Kerberos: Debian libkrb5-dev)"
            ) from None
        return gssapi

    def _name(self) -> Any:
        gssapi = self._gss()
        return gssapi.Name(self.principal, gssapi.NameType.user)

    def _log_on(self, target: KerberosTarget) -> None:
        """A new TGT and `target`'s ticket in a fresh cache, then swapped in whole for the process's
        (so no service ticket of the old logon, about to expire, is used again)."""
        gssapi = self._gss()
        # A MEMORY cache lives as long as the process: each logon gets a name never used before.
        fresh = f"{_CCACHE}-{next(_FRESH_CACHES)}"
        try:
            if self.keytab is not None:
                if not self.keytab.is_file():
                    raise ConfigError(f"keytab_file {str(self.keytab)!r} is not a readable file")
                store = {"ccache": fresh, "client_keytab": f"FILE:{self.keytab}"}
                credentials = gssapi.Credentials(name=self._name(), usage="initiate", store=store)
            else:
                password = self._password() if self._password is not None else ""
                acquired = gssapi.raw.acquire_cred_with_password(
                    self._name(), password.encode("utf-8"), usage="initiate"
                )
                del password
                credentials = gssapi.Credentials(base=acquired.creds)
            # The keytab's TGT is fetched lazily: the service ticket request makes it happen now.
            self._service_ticket(credentials, target)
            lifetime_s = credentials.lifetime
            _use_private_ccache()
            gssapi.raw.store_cred_into(
                {"ccache": _CCACHE}, credentials, usage="initiate", overwrite=True, set_default=False
            )
        except RefreshError:
            raise
        except gssapi.raw.GSSError as exc:
            raise classify_gss_error(exc, principal=self.principal) from None
        self._logons += 1
        self._checked_spns = {target.spn}
        self._renew_after = time.monotonic() + max(1.0, float(lifetime_s or 0) * (1 - _RENEW_AT_SHARE_LEFT))
        log.info("kerberos: logged on as %s (tickets valid %s s)", self.principal, lifetime_s)

    def _cached_credentials(self) -> Any:
        gssapi = self._gss()
        try:
            return gssapi.Credentials(name=self._name(), usage="initiate", store={"ccache": _CCACHE})
        except gssapi.raw.GSSError as exc:
            raise classify_gss_error(exc, principal=self.principal) from None

    def _service_ticket(self, credentials: Any, target: KerberosTarget) -> None:
        """Ask for the SPN's service ticket now (it lands in the cache pykerberos then uses)."""
        gssapi = self._gss()
        try:
            service = gssapi.Name(f"{target.service}@{target.host}", gssapi.NameType.hostbased_service)
            gssapi.SecurityContext(name=service, creds=credentials, usage="initiate").step()
        except gssapi.raw.GSSError as exc:
            raise classify_gss_error(exc, principal=self.principal, target=target) from None


def _use_private_ccache() -> None:
    # Process-wide on purpose: pykerberos (inside pywinrm) reads the default cache.
    os.environ[CCACHE_ENV] = _CCACHE


class _ProcessCredentials:
    """One KerberosCredentials per principal in this process (pykerberos reads one default cache)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_principal: dict[str, KerberosCredentials] = {}

    def get(
        self, principal: str, *, keytab: Path | None, password: PasswordSource | None, password_file: Path | None
    ) -> KerberosCredentials:
        with self._lock:
            existing = self._by_principal.get(principal.casefold())
            if existing is None:
                if self._by_principal:
                    raise ConfigError(
                        "one Kerberos account per worker: every Kerberos provider must use the same username"
                    )
                existing = KerberosCredentials(principal, keytab=keytab, password=password, password_file=password_file)
                self._by_principal[principal.casefold()] = existing
            return existing

    def reset(self) -> None:
        """Forget every logon (tests)."""
        with self._lock:
            self._by_principal.clear()


_PROCESS = _ProcessCredentials()


def process_credentials(
    principal: str, *, keytab: Path | None, password: PasswordSource | None, password_file: Path | None = None
) -> KerberosCredentials:
    """The process's logon for `principal` (created on first use); `password_file` is where
    `password` reads from, if a file (a refused logon is tried again at once when it changes)."""
    return _PROCESS.get(principal, keytab=keytab, password=password, password_file=password_file)


def process_ccache() -> str:
    """The name of the process's private credential cache."""
    return _CCACHE


def forget_logons() -> None:
    """Forget the process's logon (tests: the next provider logs on afresh, as a new worker would)."""
    _PROCESS.reset()
