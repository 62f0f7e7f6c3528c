"""The product's SMS Provider client against the hostile server, one case at a time (a child process).

    python -m chaos.xml_client --control-url URL --first-case N --cases M

Configured only through SCCM_REFRESH_* variables for site HX1 and built by
`worker.runtime.client_for`, exactly as a worker builds it (real pywinrm, Basic over HTTP). For
each case it names the case to the server, calls Get (even cases) or Invoke RefreshPkgSource
(odd), and prints one JSON line: how the call ended (`result`, `refresh_error` with the error
as an outcome would carry it, or `escaped` with the exception's type), the seconds it took, and
the peak resident memory it added (VmHWM after the call minus VmRSS before it; the peak is reset
before each call through /proc/self/clear_refs, Linux >= 4.0).

Its own process, so that its memory is its own and a reply that exhausts it or crashes the
interpreter costs only this process: the address space is capped (RLIMIT_AS) to protect the
machine, and the parent starts a new child from the next case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import requests

__all__ = ["SITE_CODE", "main"]

SITE_CODE: Final = "HX1"
PACKAGE_CLASS: Final = "SMS_Package"
PACKAGE_ID: Final = "HX100012"
DEFAULT_ADDRESS_SPACE_MB: Final = 4096
_STATUS: Final = Path("/proc/self/status")
_CLEAR_REFS: Final = Path("/proc/self/clear_refs")
_RESET_PEAK: Final = "5"  # proc(5): "5" resets the peak resident set size (VmHWM)
_CONTROL_TIMEOUT_S: Final = 5.0


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    # Without a reset VmHWM is the process's peak so far: an upper bound, still comparable.
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text(_RESET_PEAK)


def _name_case(control: requests.Session, control_url: str, case: int) -> None:
    control.post(f"{control_url}{case}", timeout=_CONTROL_TIMEOUT_S).raise_for_status()


def run_case(client: Any, case: int) -> dict[str, Any]:
    from errors import RefreshError  # noqa: PLC0415 - imported after the address space cap
    from worker.domain.outcomes import error_to_dict  # noqa: PLC0415 - idem

    operation = "get" if case % 2 == 0 else "invoke"
    before_kb = _status_kb("VmRSS")
    _reset_peak()
    started = time.monotonic()
    report: dict[str, Any] = {"case": case, "operation": operation}
    try:
        if operation == "get":
            client.get_package(PACKAGE_CLASS, PACKAGE_ID)
        else:
            client.refresh(PACKAGE_CLASS, PACKAGE_ID)
        report["outcome"] = "result"
    except RefreshError as exc:
        report.update(outcome="refresh_error", type=type(exc).__name__, error=error_to_dict(exc))
    except Exception as exc:  # what the promise forbids: reported, never re-raised
        report.update(outcome="escaped", type=type(exc).__name__)
    report["seconds"] = round(time.monotonic() - started, 3)
    report["peak_growth_mb"] = round(max(0, _status_kb("VmHWM") - before_kb) / 1024, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.xml_client")
    parser.add_argument("--control-url", required=True)
    parser.add_argument("--first-case", type=int, default=0)
    parser.add_argument("--cases", type=int, required=True, help="total number of cases (the last is cases - 1)")
    parser.add_argument("--address-space-mb", type=int, default=DEFAULT_ADDRESS_SPACE_MB)
    args = parser.parse_args(argv)
    cap = args.address_space_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    from worker.runtime import client_for  # noqa: PLC0415 - after the cap, like everything it allocates

    client = client_for(SITE_CODE)
    control = requests.Session()
    control.trust_env = False  # the control URL is on 127.0.0.1: no proxy lookup
    print(json.dumps({"ready": True}), flush=True)
    for case in range(args.first_case, args.cases):
        _name_case(control, args.control_url, case)
        print(json.dumps(run_case(client, case)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
