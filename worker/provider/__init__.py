"""The SMS Provider client: WS-Man calls over WinRM, and what every failure means.

    client.py     SccmClient: Get, Invoke RefreshPkgSource, Enumerate/Pull; short in-call retries;
                  DP status rows, messages and rollups for many packages; Put RefreshNow
    transport.py  ProviderTransport: pywinrm, one session per thread, HTTP errors read as faults
    classify.py   every fault, HTTP status and exception as a RefreshError (docs/errors.md)

The wire format itself is worker/wsman/'s (a leaf the domain uses too).
"""

from worker.provider.classify import classify_exception, error_from_wsman, fault_to_error, sanitize_text
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport

__all__ = [
    "ProviderTransport",
    "SccmClient",
    "classify_exception",
    "error_from_wsman",
    "fault_to_error",
    "sanitize_text",
]
