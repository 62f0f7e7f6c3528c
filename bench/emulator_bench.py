"""Emulator throughput, CPU per request and big catalogues, with real pywinrm (`python -m bench.emulator_bench`).

Starts `python -m emulator` in a subprocess (so client and server CPU are measured apart).

Part `requests`, one mode after the other, for at most `--requests` requests or `--seconds`
seconds each:

* baseline: `GET /admin/health` through one keep-alive requests.Session with Basic auth, the
  same HTTP stack with no SOAP, auth handshake or encryption: compare modes against it, not
  against absolute numbers from another machine;
* basic_http: Invoke RefreshPkgSource with pywinrm, Basic over HTTP (AllowUnencrypted);
* ntlm_http_encrypted: the same with NTLM and message encryption.

Part `catalogue`, for `--catalogue-sizes` packages against a `--baseline-packages` catalogue
measured in the same run: the time from starting the process to its endpoint answering, the
cost per Get, per Invoke and per WQL query pinning one PackageID, and a full WQL enumeration
(`SELECT * FROM SMS_PackageBaseclass`, Enumerate + Pulls) at each `--page-sizes`.

Prints one JSON document: requests/s, client CPU ms per request (this process), server CPU
ms per request (the emulator's own per-operation thread_time from /admin/stats, and the whole
server process from /proc when available), and each result relative to its baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from winrm.protocol import Protocol

from bench.emulator_process import EmulatorProcess
from bench.measure import process_tree_cpu_s, ratio
from testing.wsman_requests import enumerate_envelope, get_envelope, invoke_envelope, return_value
from worker.wsman import build_pull, enumeration_uri, parse_enumeration

_USERNAME = "LAB\\bench"
_STORAGE_DIRECT = 2
_MAX_PULLS = 100_000
_SAMPLED_PACKAGES = 200


def _start(password: str, packages: int) -> tuple[EmulatorProcess, float]:
    """The emulator with Basic and NTLM (AllowUnencrypted), and seconds until its endpoint answered."""
    argv = ["--auth", "basic,ntlm", "--allow-unencrypted", "--packages", str(packages), "--compress-share", "0"]
    started = time.perf_counter()
    server = EmulatorProcess(username=_USERNAME, password=password, emulator_args=argv)
    server.admin("GET", "health")
    return server, time.perf_counter() - started


def _protocol(server: EmulatorProcess, transport: str, password: str) -> Protocol:
    return Protocol(
        server.url,
        transport=transport,  # type: ignore[arg-type]  # "basic" | "ntlm", chosen by the callers
        username=_USERNAME,
        password=password,
        read_timeout_sec=60,
        operation_timeout_sec=50,
        proxy=None,
    )


def _measure(
    call: Callable[[int], None], max_requests: int, max_seconds: float, server: EmulatorProcess
) -> dict[str, Any]:
    """Run `call(i)` until either bound; wall time, client CPU and server process CPU per request."""
    server_cpu_start = process_tree_cpu_s(server.pid)
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    deadline = wall_start + max_seconds
    done = 0
    while done < max_requests and time.perf_counter() < deadline:
        call(done)
        done += 1
    wall_s = time.perf_counter() - wall_start
    client_cpu_s = time.process_time() - cpu_start
    server_cpu_end = process_tree_cpu_s(server.pid)
    result: dict[str, Any] = {
        "requests": done,
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(done / wall_s, 1),
        "client_cpu_ms_per_request": round(client_cpu_s * 1000 / done, 3),
    }
    if server_cpu_start is not None and server_cpu_end is not None:
        result["server_process_cpu_ms_per_request"] = round((server_cpu_end - server_cpu_start) * 1000 / done, 3)
    return result


def _direct_packages(server: EmulatorProcess) -> list[tuple[str, str]]:
    """(PackageID, class) of STORAGE_DIRECT packages: every refresh is accepted (ReturnValue 0)."""
    return [
        (p["PackageID"], p["class"])
        for p in server.packages()
        if p["PkgSourceFlag"] == _STORAGE_DIRECT and p["class"] != "SMS_TaskSequencePackage"
    ]


def _wsman_mode(
    server: EmulatorProcess,
    envelopes: list[str],
    protocol: Protocol,
    check: Callable[[bytes], None],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Send `envelopes` round-robin on one keep-alive session; the server's CPU per operation too."""
    # Authenticate (and for NTLM set up encryption) outside the measured window.
    before = server.stats()["operations"]
    protocol.send_message(envelopes[0])
    server.settle(before + 1)
    server.reset_stats()

    def call(index: int) -> None:
        check(protocol.send_message(envelopes[index % len(envelopes)]))

    result = _measure(call, args.requests, args.seconds, server)
    stats = server.stats()
    result["server_cpu_ms_per_request"] = stats["cpu_ms_per_operation"]
    result["server_operations"] = stats["operations"]
    protocol.transport.close_session()
    return result


def _accepted(reply: bytes) -> None:
    if return_value(reply) != 0:
        raise RuntimeError("RefreshPkgSource was not accepted")


def _any_reply(_reply: bytes) -> None:
    """Faults raise in pywinrm; any reply is fine."""


def _relative(mode: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    relative = {
        "throughput_vs_baseline": ratio(mode["requests_per_s"], baseline["requests_per_s"]),
        "client_cpu_vs_baseline": ratio(mode["client_cpu_ms_per_request"], baseline["client_cpu_ms_per_request"]),
    }
    if "server_process_cpu_ms_per_request" in mode:
        relative["server_process_cpu_vs_baseline"] = ratio(
            mode["server_process_cpu_ms_per_request"], baseline.get("server_process_cpu_ms_per_request")
        )
    return relative


def _requests_part(password: str, args: argparse.Namespace) -> dict[str, Any]:
    server, _start_s = _start(password, args.baseline_packages)
    try:
        server.admin("GET", "health")  # warm the connection
        baseline = _measure(lambda _i: server.admin("GET", "health"), args.requests, args.seconds, server)
        site = server.admin("GET", "health")["site_code"]
        envelopes = [invoke_envelope(server.url, site, pid, class_name=cls) for pid, cls in _direct_packages(server)]
        modes = {
            "basic_http": _wsman_mode(server, envelopes, _protocol(server, "basic", password), _accepted, args),
            "ntlm_http_encrypted": _wsman_mode(server, envelopes, _protocol(server, "ntlm", password), _accepted, args),
        }
    finally:
        server.stop()
    return {
        "baseline_admin_health": baseline,
        "modes": modes,
        "relative_to_baseline": {name: _relative(mode, baseline) for name, mode in modes.items()},
    }


def _full_enumeration(server: EmulatorProcess, protocol: Protocol, site: str, page: int) -> dict[str, Any]:
    """Every instance through Enumerate + Pulls: wall time, requests, items, server CPU."""
    server.reset_stats()
    cpu_start = process_tree_cpu_s(server.pid)
    wall_start = time.perf_counter()
    first = enumerate_envelope(server.url, site, "SELECT * FROM SMS_PackageBaseclass", max_elements=page)
    result = parse_enumeration(protocol.send_message(first))
    items, requests_sent = len(result.items), 1
    while result.has_more and requests_sent < _MAX_PULLS:
        assert result.context is not None
        pull = build_pull(
            to_url=server.url,
            resource_uri=enumeration_uri(site),
            context=result.context,
            max_elements=page,
            operation_timeout_s=50,
        )
        result = parse_enumeration(protocol.send_message(pull.text))
        items += len(result.items)
        requests_sent += 1
    wall_s = time.perf_counter() - wall_start
    cpu_end = process_tree_cpu_s(server.pid)
    server.settle(requests_sent)
    stats = server.stats()
    return {
        "page_size": page,
        "items": items,
        "requests": requests_sent,
        "wall_s": round(wall_s, 3),
        "server_cpu_ms_per_request": stats["cpu_ms_per_operation"],
        "server_process_cpu_s": None if cpu_start is None or cpu_end is None else round(cpu_end - cpu_start, 3),
    }


def _catalogue_run(packages: int, password: str, args: argparse.Namespace) -> dict[str, Any]:
    server, start_s = _start(password, packages)
    try:
        site = server.admin("GET", "health")["site_code"]
        candidates = _direct_packages(server)
        direct = random.Random(packages).sample(candidates, min(_SAMPLED_PACKAGES, len(candidates)))
        protocol = _protocol(server, "basic", password)
        url = server.url
        pinned = "SELECT * FROM SMS_PackageBaseclass WHERE PackageID = '{}'"
        per_request = {
            "get": [get_envelope(url, site, pid, class_name=cls) for pid, cls in direct],
            "invoke": [invoke_envelope(url, site, pid, class_name=cls) for pid, cls in direct],
            "wql_packageid": [enumerate_envelope(url, site, pinned.format(pid)) for pid, _cls in direct],
        }
        checks = {"get": _any_reply, "invoke": _accepted, "wql_packageid": _any_reply}
        costs = {
            name: _wsman_mode(server, envelopes, protocol, checks[name], args)
            for name, envelopes in per_request.items()
        }
        enumerations = [_full_enumeration(server, protocol, site, page) for page in args.page_sizes]
    finally:
        server.stop()
    return {"packages": packages, "start_s": round(start_s, 3), "per_request": costs, "full_enumeration": enumerations}


def _versus(run: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Each figure of a big catalogue divided by the baseline's."""
    return {
        "start_s": ratio(run["start_s"], baseline["start_s"]),
        "per_request_requests_per_s": {
            name: ratio(cost["requests_per_s"], baseline["per_request"][name]["requests_per_s"])
            for name, cost in run["per_request"].items()
        },
        "per_request_server_cpu_p50": {
            name: ratio(
                cost["server_cpu_ms_per_request"]["p50"],
                baseline["per_request"][name]["server_cpu_ms_per_request"]["p50"],
            )
            for name, cost in run["per_request"].items()
        },
    }


def _catalogue_part(password: str, args: argparse.Namespace) -> dict[str, Any]:
    baseline = _catalogue_run(args.baseline_packages, password, args)
    runs = [_catalogue_run(size, password, args) for size in args.catalogue_sizes]
    return {
        "baseline": baseline,
        "runs": runs,
        "relative_to_baseline": {str(run["packages"]): _versus(run, baseline) for run in runs},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the chosen parts, each against its own baseline; the JSON-ready report."""
    password = secrets.token_urlsafe(18)
    report: dict[str, Any] = {
        "benchmark": "emulator round trips and catalogue sizes (pywinrm, one keep-alive connection)",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "bounds": {"max_requests_per_mode": args.requests, "max_seconds_per_mode": args.seconds},
    }
    if "requests" in args.parts:
        report["requests"] = _requests_part(password, args)
    if "catalogue" in args.parts:
        report["catalogue"] = _catalogue_part(password, args)
    return report


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}")
    return values


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not set(parts) <= {"requests", "catalogue"}:
        raise argparse.ArgumentTypeError("expected a comma list of: requests, catalogue")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.emulator_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", type=_parts, default=["requests", "catalogue"], help="requests, catalogue")
    parser.add_argument("--requests", type=int, default=2000, help="max requests per mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="max seconds per mode")
    parser.add_argument("--baseline-packages", type=int, default=50, help="packages in the baseline catalogue")
    parser.add_argument("--catalogue-sizes", type=_int_list, default=[10_000, 20_000], help="big catalogues to measure")
    parser.add_argument("--page-sizes", type=_int_list, default=[100, 500], help="Enumerate/Pull page sizes")
    args = parser.parse_args(argv)
    if args.requests < 1 or not 0 < args.seconds <= 15:
        parser.error("--requests must be >= 1 and --seconds in (0, 15] (the whole run stays within minutes)")
    if args.baseline_packages < 10 or max(args.catalogue_sizes) > 100_000:
        parser.error("--baseline-packages must be >= 10 and --catalogue-sizes at most 100000")
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
