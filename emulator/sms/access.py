"""Who may do what at the emulated site: the account with rights on the SMS namespace, and RBAC.

The one configured account may use `root\\SMS\\site_<code>`; any other authenticated account
(the `denied_users`) gets WMI access denied. ConfigMgr RBAC can additionally hide single
packages from the configured account (`deny`). Account names compare like Windows ones:
case-insensitive, `DOMAIN\\name`, `name@domain.fqdn` or a bare `name` (any domain).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["AccessRules", "account"]


def account(user: str) -> tuple[str | None, str]:
    """(domain, name), lower-cased, from `DOMAIN\\name`, `name@domain.fqdn` or `name`."""
    user = user.strip()
    if "\\" in user:
        domain, name = user.split("\\", 1)
    elif "@" in user:
        name, domain = user.split("@", 1)
        domain = domain.split(".", 1)[0]
    else:
        domain, name = "", user
    return (domain.lower() or None), name.lower()


class AccessRules:
    """The configured account and the packages RBAC hides from it. Not thread-safe: the Provider locks."""

    def __init__(self, username: str, denied_users: Iterable[str] = ()) -> None:
        self._account = account(username)
        if any(self.may_use_namespace(user) for user in denied_users):
            raise ValueError("EmulatorSettings.denied_users cannot name the configured username")
        self._denied: set[str] = set()

    def may_use_namespace(self, user: str) -> bool:
        """Whether `user` is the configured account (a missing domain on either side matches any)."""
        domain, name = account(user)
        expected_domain, expected_name = self._account
        return name == expected_name and (domain is None or expected_domain is None or domain == expected_domain)

    def deny(self, package_id: str) -> None:
        self._denied.add(package_id.upper())

    def allow(self, package_id: str) -> None:
        self._denied.discard(package_id.upper())

    def is_denied(self, package_id: str) -> bool:
        return package_id.upper() in self._denied
