"""Emulator throughput and CPU per request, with real pywinrm (`python -m bench.emulator_bench`).

Starts `python -m emulator` in a subprocess (so client and server CPU are measured apart),
then, one after the other, for at most `--requests` requests or `--seconds` seconds each:

* baseline: `GET /admin/health` through one keep-alive requests.Session with Basic auth, the
  same HTTP stack with no SOAP, auth handshake or encryption: compare modes against it, not
  against absolute numbers from another machine;
* basic_http: Invoke RefreshPkgSource with pywinrm, Basic over HTTP (AllowUnencrypted);
* ntlm_http_encrypted: the same with NTLM and message encryption.

Prints one JSON document: requests/s, client CPU ms per request (this process), server CPU
ms per request (the emulator's own per-operation thread_time from /admin/stats, and the whole
server process from /proc when available), and each mode's cost relative to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from winrm.protocol import Protocol

from testing.wsman_requests import invoke_envelope, return_value

_USERNAME = "LAB\\bench"
_STARTUP_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
_SETTLE_TIMEOUT_S = 2.0
_URL_PREFIX = "WS-Man endpoint: "
_STORAGE_DIRECT = 2
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class _Server:
    """The emulator subprocess: start, read its URL line, stop with SIGTERM."""

    def __init__(self, password: str, packages: int) -> None:
        env = {**os.environ, "SCCM_EMULATOR_PASSWORD": password}
        argv = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--auth", "basic,ntlm", "--allow-unencrypted", "--username", _USERNAME]
        argv += ["--packages", str(packages), "--compress-share", "0"]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        self.url = self._read_url()
        self.admin_url = self.url.removesuffix("/wsman") + "/admin/"

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith(_URL_PREFIX):
                return line.removeprefix(_URL_PREFIX).strip()
        self.stop()
        raise RuntimeError("the emulator did not print its endpoint")

    def cpu_s(self) -> float | None:
        return _process_cpu_s(self.process.pid)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(_STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def _measure(call: Callable[[int], None], max_requests: int, max_seconds: float, server: _Server) -> dict[str, Any]:
    """Run `call(i)` until either bound; wall time, client CPU and server process CPU per request."""
    server_cpu_start = server.cpu_s()
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    deadline = wall_start + max_seconds
    done = 0
    while done < max_requests and time.perf_counter() < deadline:
        call(done)
        done += 1
    wall_s = time.perf_counter() - wall_start
    client_cpu_s = time.process_time() - cpu_start
    server_cpu_end = server.cpu_s()
    result: dict[str, Any] = {
        "requests": done,
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(done / wall_s, 1),
        "client_cpu_ms_per_request": round(client_cpu_s * 1000 / done, 3),
    }
    if server_cpu_start is not None and server_cpu_end is not None:
        result["server_process_cpu_ms_per_request"] = round((server_cpu_end - server_cpu_start) * 1000 / done, 3)
    return result


def _admin(session: requests.Session, server: _Server, method: str, route: str) -> Any:
    response = session.request(method, server.admin_url + route, timeout=10)
    response.raise_for_status()
    return response.json()


def _wsman_mode(
    server: _Server, admin: requests.Session, transport: str, password: str, args: argparse.Namespace
) -> dict[str, Any]:
    # STORAGE_DIRECT packages: every refresh is accepted (ReturnValue 0).
    packages = [
        (p["PackageID"], p["class"])
        for p in _admin(admin, server, "GET", "packages")["packages"]
        if p["PkgSourceFlag"] == _STORAGE_DIRECT and p["class"] != "SMS_TaskSequencePackage"
    ]
    site_code = _admin(admin, server, "GET", "health")["site_code"]
    protocol = Protocol(
        server.url,
        transport=transport,  # type: ignore[arg-type]  # "basic" | "ntlm", chosen below
        username=_USERNAME,
        password=password,
        read_timeout_sec=30,
        operation_timeout_sec=20,
        proxy=None,
    )
    envelopes = [
        invoke_envelope(server.url, site_code, package_id, class_name=class_name) for package_id, class_name in packages
    ]
    # Authenticate (and for NTLM set up encryption) outside the measured window. The server
    # records an operation just after writing its reply: wait for that before resetting.
    before = _admin(admin, server, "GET", "stats")["operations"]
    protocol.send_message(envelopes[0])
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while _admin(admin, server, "GET", "stats")["operations"] <= before and time.monotonic() < deadline:
        time.sleep(0.001)
    _admin(admin, server, "POST", "stats/reset")

    def call(index: int) -> None:
        reply = protocol.send_message(envelopes[index % len(envelopes)])
        if return_value(reply) != 0:
            raise RuntimeError("RefreshPkgSource was not accepted")

    result = _measure(call, args.requests, args.seconds, server)
    stats = _admin(admin, server, "GET", "stats")
    result["server_cpu_ms_per_request"] = stats["cpu_ms_per_operation"]
    result["server_operations"] = stats["operations"]
    protocol.transport.close_session()
    return result


def _relative(mode: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    relative = {
        "throughput_vs_baseline": round(mode["requests_per_s"] / baseline["requests_per_s"], 3),
        "client_cpu_vs_baseline": round(mode["client_cpu_ms_per_request"] / baseline["client_cpu_ms_per_request"], 3),
    }
    if "server_process_cpu_ms_per_request" in mode and baseline.get("server_process_cpu_ms_per_request"):
        relative["server_process_cpu_vs_baseline"] = round(
            mode["server_process_cpu_ms_per_request"] / baseline["server_process_cpu_ms_per_request"], 3
        )
    return relative


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the emulator, measure every mode, stop it; the JSON-ready report."""
    password = secrets.token_urlsafe(18)
    server = _Server(password, args.packages)
    try:
        admin = requests.Session()
        admin.auth = (_USERNAME, password)
        admin.trust_env = False
        _admin(admin, server, "GET", "health")  # warm the connection
        baseline = _measure(lambda _i: _admin(admin, server, "GET", "health"), args.requests, args.seconds, server)
        modes = {
            "basic_http": _wsman_mode(server, admin, "basic", password, args),
            "ntlm_http_encrypted": _wsman_mode(server, admin, "ntlm", password, args),
        }
        admin.close()
    finally:
        exit_code = server.stop()
    return {
        "benchmark": "emulator RefreshPkgSource round trips (pywinrm, one keep-alive connection)",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "bounds": {"max_requests_per_mode": args.requests, "max_seconds_per_mode": args.seconds},
        "baseline_admin_health": baseline,
        "modes": modes,
        "relative_to_baseline": {name: _relative(mode, baseline) for name, mode in modes.items()},
        "emulator_exit_code": exit_code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.emulator_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=2000, help="max requests per mode")
    parser.add_argument("--seconds", type=float, default=8.0, help="max seconds per mode")
    parser.add_argument("--packages", type=int, default=50, help="packages in the emulated catalogue")
    args = parser.parse_args(argv)
    if args.requests < 1 or not 0 < args.seconds <= 15:
        parser.error("--requests must be >= 1 and --seconds in (0, 15] (the whole run stays under a minute)")
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
