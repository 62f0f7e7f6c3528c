"""`sccm-refresh doctor`, for each Kerberos provider: logon, service ticket, clock, an authenticated Get.

One line each, as the worker would do it (worker/provider/kerberos.py, pywinrm's own transport):

* logon: the account's credentials are obtainable (keytab or password file) from a KDC. The
  accounts require pre-authentication (Active Directory's default), so a logon that succeeds
  also proves this machine's clock is within the realm's skew of the KDC's;
* ticket: the KDC issues a ticket for the provider's SPN (derived from the endpoint or `spn`);
* Get: one WS-Man Get over an authenticated (and, over HTTP, encrypted) session. It asks for a
  PackageID no site has, so "no such package" is the answer of a provider that let us in.

Every failure line is the error's own message: what an administrator can act on, no secret.
"""

from __future__ import annotations

from collections.abc import Callable

from config.settings import ProviderSettings, RetryPolicy
from errors import NotFoundError, RefreshError
from worker.provider.client import SccmClient
from worker.provider.kerberos import kerberos_target, process_credentials
from worker.provider.transport import ProviderTransport

__all__ = ["check_kerberos_provider"]

# The site code and five hex digits no ConfigMgr site hands out (the emulator's neither).
_PROBE_PACKAGE_SUFFIX = "FFFFF"
_ONE_TRY = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0)

Line = Callable[[bool, str], None]


def check_kerberos_provider(site_code: str, provider: ProviderSettings, line: Line) -> None:
    """Report the Kerberos checks of one provider through `line(ok, text)`."""
    target = kerberos_target(provider.endpoint, provider.spn)
    name = f"{site_code} kerberos"
    credentials = process_credentials(
        provider.username,
        keytab=provider.keytab_file,
        password=None if provider.keytab_file else provider.secret_password,
        password_file=None if provider.keytab_file else provider.password_file,
    )
    source = "keytab" if provider.keytab_file else "password"
    try:
        credentials.ensure(target)
    except RefreshError as exc:
        line(False, f"{name}: {exc.message}")
        return
    line(True, f"{name}: {provider.username} logged on from its {source}; clock within the realm's skew of the KDC")
    line(True, f"{name}: ticket for {target.spn}")
    transport = ProviderTransport(site_code, provider)
    try:
        SccmClient(transport, site_code, _ONE_TRY).get_package("SMS_Package", f"{site_code}{_PROBE_PACKAGE_SUFFIX}")
    except NotFoundError:
        line(True, f"{name}: authenticated Get answered by {provider.endpoint}")
    except RefreshError as exc:
        line(False, f"{name}: Get at {provider.endpoint} failed ({exc.kind}): {exc.message}")
    else:
        line(True, f"{name}: authenticated Get answered by {provider.endpoint}")
    finally:
        transport.close()
