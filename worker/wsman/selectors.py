"""Resource URIs of the SMS Provider's WMI classes, as WS-Man addresses them."""

from __future__ import annotations

import re

from worker.wsman.exceptions import EnvelopeValueError
from worker.wsman.namespaces import WMI_RESOURCE_URI_BASE

__all__ = ["enumeration_uri", "resource_uri"]

# Callers pass values the domain layer validated; this only keeps a URI from being bent.
_URI_PART_RE = re.compile(r"[A-Za-z0-9_]{1,128}")


def _uri_part(what: str, value: str) -> str:
    if not isinstance(value, str) or not _URI_PART_RE.fullmatch(value):
        raise EnvelopeValueError(f"invalid {what} for a resource URI: {value!r:.64}")
    return value


def resource_uri(site_code: str, class_name: str) -> str:
    """The WS-Man resource URI of a package class in a site's SMS Provider namespace."""
    return f"{_site_namespace_uri(_uri_part('site code', site_code).upper())}/{_uri_part('class', class_name)}"


def enumeration_uri(site_code: str) -> str:
    """The resource URI WQL enumerations are sent to: the site namespace with class `*`."""
    return f"{_site_namespace_uri(_uri_part('site code', site_code).upper())}/*"


def _site_namespace_uri(site: str) -> str:
    # WMI namespace root\SMS\site_<SITE>, spelled lower-case the way WinRM's own tools do.
    return f"{WMI_RESOURCE_URI_BASE}/root/sms/site_{site}"
