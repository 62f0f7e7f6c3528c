"""`python -m emulator`: run the SMS Provider emulator until Ctrl-C / SIGTERM.

Parses flags into EmulatorSettings (one flag per field, defaults shown by --help), starts
`emulator.server.Emulator` and prints where it listens and where its credentials come from:
--password, --password-file, the SCCM_EMULATOR_PASSWORD environment variable, or a generated
password printed once on stdout (a dev tool; it is never logged).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TextIO, get_args

from emulator.fault_injection import LATENCY_DISTRIBUTIONS, MAX_LATENCY_S
from emulator.flag_types import (
    auth_modes,
    fault_rate,
    latency_ms,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    share,
    typed,
)
from emulator.listener import quiet_handshake_logging
from emulator.server import Emulator
from emulator.settings import FAULT_KINDS, EmulatorSettings, FaultRates, MediumFailureMode
from emulator.sms.content_status import build_distribution_points

__all__ = ["PASSWORD_ENV", "build_parser", "main", "settings_from_args"]

PASSWORD_ENV = "SCCM_EMULATOR_PASSWORD"  # noqa: S105 - the variable name, not a secret
_MEDIUM_FAILURE_MODES: tuple[str, ...] = get_args(MediumFailureMode)
_TLS_MODES = ("off", "self-signed", "files")
_GENERATED_PASSWORD_BYTES = 18
_DEFAULTS = EmulatorSettings()


def build_parser() -> argparse.ArgumentParser:
    """The `python -m emulator` argument parser (one flag per EmulatorSettings field)."""
    d = _DEFAULTS
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="SMS Provider (ConfigMgr) emulator speaking WS-Management like a WinRM listener.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    net = parser.add_argument_group("listener")
    net.add_argument("--host", default=d.host, help="address to bind")
    net.add_argument("--port", type=typed(port, "port"), default=d.port, help="port (0 = any free port)")
    net.add_argument("--machine", default=d.machine, help="machine name reported in faults")
    net.add_argument(
        "--tls",
        choices=_TLS_MODES,
        default=d.tls,
        help="off = plain HTTP; self-signed = generate a CA and certificate (CA path printed); "
        "files = --tls-cert/--tls-key",
    )
    net.add_argument("--tls-cert", default=d.tls_cert_file, help="PEM certificate (chain) for --tls files")
    net.add_argument("--tls-key", default=d.tls_key_file, help="PEM private key for --tls files")
    net.add_argument(
        "--idle-timeout-s",
        type=typed(positive_float, "seconds"),
        default=d.idle_timeout_s,
        help="close keep-alive connections idle this long (HTTP.sys: about 120)",
    )
    net.add_argument(
        "--max-envelope-size-bytes",
        type=typed(positive_int, "size"),
        default=d.max_envelope_size_bytes,
        help="largest SOAP envelope accepted",
    )

    auth = parser.add_argument_group("authentication")
    auth.add_argument("--username", default=d.username, help="the one account the listener accepts")
    auth.add_argument(
        "--password",
        default=None,
        help=f"its password (visible in the process list: prefer --password-file or ${PASSWORD_ENV}; "
        "generated and printed when none is given)",
    )
    auth.add_argument("--password-file", default=None, help="file whose first line is the password")
    auth.add_argument(
        "--denied-user",
        action="append",
        default=[],
        metavar="NAME",
        help="repeatable: an account that authenticates with the same password but gets WMI access denied",
    )
    auth.add_argument(
        "--auth",
        type=auth_modes,
        default=d.auth_modes,
        help="comma list of accepted schemes: basic, ntlm, kerberos",
    )
    auth.add_argument(
        "--kerberos-keytab",
        default=d.kerberos_keytab,
        metavar="PATH",
        help="with --auth kerberos: the keytab holding the listener's HTTP/<host> keys (realm from KRB5_CONFIG)",
    )
    auth.add_argument(
        "--allow-unencrypted",
        action="store_true",
        default=d.allow_unencrypted,
        help="WinRM AllowUnencrypted: accept Basic and plaintext SOAP over plain HTTP",
    )

    cat = parser.add_argument_group("catalogue")
    cat.add_argument("--site-code", default=d.site_code, help="ConfigMgr site code (3 letters/digits)")
    cat.add_argument(
        "--packages", type=typed(positive_int, "count"), default=d.package_count, help="packages generated"
    )
    cat.add_argument("--seed", type=typed(int, "seed"), default=d.seed, help="seed of catalogue and faults")
    cat.add_argument(
        "--compress-share",
        type=typed(share, "share"),
        default=d.compress_share,
        help="share of packages with PkgSourceFlag=3 (STORAGE_COMPRESS)",
    )
    cat.add_argument(
        "--medium-not-ready-share",
        type=typed(share, "share"),
        default=d.medium_not_ready_share,
        help="share of STORAGE_COMPRESS packages whose medium starts not ready",
    )
    cat.add_argument(
        "--medium-ready-after-s",
        type=typed(non_negative_float, "seconds"),
        default=d.medium_ready_after_s,
        help="a not-ready medium becomes ready after this many seconds (default: only when told)",
    )
    cat.add_argument(
        "--medium-ready-after-attempts",
        type=typed(positive_int, "count"),
        default=d.medium_ready_after_attempts,
        help="... or after this many failed refresh attempts",
    )
    cat.add_argument(
        "--medium-failure-mode",
        choices=_MEDIUM_FAILURE_MODES,
        default=d.medium_failure_mode,
        help="how a refresh with the medium not ready fails: non-zero ReturnValue or a WMI fault",
    )
    cat.add_argument(
        "--distmgr-threads",
        type=typed(positive_int, "count"),
        default=d.distmgr_threads,
        help="packages Distribution Manager processes at once (ConfigMgr's 'Maximum number of packages')",
    )
    cat.add_argument(
        "--distmgr-time-per-package-s",
        # The old flag name: it was a delay per refresh; it is the time per package now.
        "--distmgr-delay-s",
        dest="distmgr_time_per_package_s",
        type=typed(non_negative_float, "seconds"),
        default=d.distmgr_time_per_package_s,
        help="time DistMgr takes per package before SourceVersion goes up (0 = at once); "
        "accepted refreshes queue FIFO meanwhile, with ActionInProgress = 1",
    )

    _add_distribution_flags(parser)

    ops = parser.add_argument_group("operational faults")
    ops.add_argument(
        "--latency-ms",
        type=typed(latency_ms, "milliseconds"),
        default=d.latency_s * 1000.0,
        help=f"mean latency added to every WS-Man operation (at most {MAX_LATENCY_S * 1000.0:g}); past a "
        "request's OperationTimeout the reply is the w:TimedOut fault",
    )
    ops.add_argument(
        "--latency-distribution",
        choices=LATENCY_DISTRIBUTIONS,
        default=d.latency_distribution,
        help="fixed, uniform on [0, 2*mean), or exponential with that mean (capped at 10*mean)",
    )
    ops.add_argument(
        "--fault-rate",
        type=fault_rate,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"probability per operation of an injected fault (repeatable); KIND: {', '.join(FAULT_KINDS)}",
    )
    ops.add_argument(
        "--max-ops-per-user",
        type=typed(positive_int, "count"),
        default=d.max_concurrent_operations_per_user,
        help="concurrent WS-Man operations per user before the quota fault",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="WARNING",
        help="logging level (credentials are never logged)",
    )
    return parser


def _password(args: argparse.Namespace, environ: dict[str, str]) -> tuple[str, str]:
    """(password, where it came from); OSError/ValueError for an unusable --password-file."""
    if args.password:
        return args.password, "--password"
    if args.password_file:
        lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0]:
            raise ValueError("the password file is empty")
        return lines[0], f"--password-file {args.password_file}"
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV], f"${PASSWORD_ENV}"
    return secrets.token_urlsafe(_GENERATED_PASSWORD_BYTES), "generated"


def settings_from_args(args: argparse.Namespace, password: str) -> EmulatorSettings:
    """EmulatorSettings from parsed flags (semantic checks raise ValueError)."""
    if args.tls == "files" and not (args.tls_cert and args.tls_key):
        raise ValueError("--tls files needs --tls-cert and --tls-key")
    if args.tls != "files" and (args.tls_cert or args.tls_key):
        raise ValueError("--tls-cert/--tls-key need --tls files")
    if any(user.casefold() == args.username.casefold() for user in args.denied_user):
        raise ValueError("--denied-user cannot name --username")
    if ("kerberos" in args.auth) != bool(args.kerberos_keytab):
        raise ValueError("--auth kerberos and --kerberos-keytab go together")
    rates = dict(args.fault_rate)
    if sum(rates.values()) > 1.0:
        raise ValueError("--fault-rate values must add up to at most 1")
    settings = replace(
        _DEFAULTS,
        host=args.host,
        port=args.port,
        site_code=args.site_code,
        machine=args.machine,
        username=args.username,
        password=password,
        denied_users=tuple(args.denied_user),
        auth_modes=args.auth,
        kerberos_keytab=args.kerberos_keytab,
        allow_unencrypted=args.allow_unencrypted,
        tls=args.tls,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        package_count=args.packages,
        seed=args.seed,
        compress_share=args.compress_share,
        medium_not_ready_share=args.medium_not_ready_share,
        medium_ready_after_s=args.medium_ready_after_s,
        medium_ready_after_attempts=args.medium_ready_after_attempts,
        medium_failure_mode=args.medium_failure_mode,
        distmgr_threads=args.distmgr_threads,
        distmgr_time_per_package_s=args.distmgr_time_per_package_s,
        dp_count=args.dp_count,
        pull_dp_count=args.pull_dp_count,
        dp_jobs=args.dp_jobs,
        dp_copy_time_s=args.dp_copy_time_s,
        pull_dp_copy_factor=args.pull_dp_copy_factor,
        dp_retry_count=args.dp_retry_count,
        dp_retry_delay_s=args.dp_retry_delay_s,
        dp_offline=tuple(args.dp_offline),
        dp_failing=tuple(args.dp_failing),
        dp_failure_share=args.dp_failure_share,
        dp_scheduled=tuple(args.dp_scheduled),
        dp_schedule_period_s=args.dp_schedule_period_s,
        dp_schedule_open_s=args.dp_schedule_open_s,
        dp_child_sites=tuple(args.dp_child_site),
        latency_s=args.latency_ms / 1000.0,
        latency_distribution=args.latency_distribution,
        fault_rates=FaultRates(**rates),
        idle_timeout_s=args.idle_timeout_s,
        max_concurrent_operations_per_user=args.max_ops_per_user,
        max_envelope_size_bytes=args.max_envelope_size_bytes,
    )
    build_distribution_points(settings)  # a DP flag naming no DP (DP09 of 5) fails here, not at start
    return settings


def _add_distribution_flags(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    dps = parser.add_argument_group("distribution points (PkgXferMgr)")
    dps.add_argument("--dp-count", type=typed(positive_int, "count"), default=d.dp_count, help="DPs of the site")
    dps.add_argument(
        "--pull-dp-count",
        type=typed(non_negative_int, "count"),
        default=d.pull_dp_count,
        help="how many of them (the last ones) are pull DPs",
    )
    dps.add_argument("--dp-jobs", type=typed(positive_int, "count"), default=d.dp_jobs, help="push transfers at once")
    dps.add_argument(
        "--dp-copy-time-s",
        type=typed(non_negative_float, "seconds"),
        default=d.dp_copy_time_s,
        help="time one copy to one DP takes (0 = at once)",
    )
    dps.add_argument(
        "--pull-dp-copy-factor",
        type=typed(non_negative_float, "factor"),
        default=d.pull_dp_copy_factor,
        help="a pull DP's copy takes this many times --dp-copy-time-s",
    )
    dps.add_argument(
        "--dp-retry-count",
        type=typed(non_negative_int, "count"),
        default=d.dp_retry_count,
        help="retries of a failed copy before the DP is failed for the package (ConfigMgr: 100)",
    )
    dps.add_argument(
        "--dp-retry-delay-s",
        type=typed(non_negative_float, "seconds"),
        default=d.dp_retry_delay_s,
        help="delay between retries (ConfigMgr: 1800)",
    )
    dps.add_argument("--dp-offline", action="append", default=[], metavar="DP", help="an offline DP (DP03)")
    dps.add_argument(
        "--dp-child-site", action="append", default=[], metavar="DP=SITE", help="a DP of a child site (DP04=S01)"
    )
    dps.add_argument(
        "--dp-failing", action="append", default=[], metavar="DP", help="a DP failing --dp-failure-share of copies"
    )
    dps.add_argument(
        "--dp-failure-share", type=typed(share, "share"), default=d.dp_failure_share, help="see --dp-failing"
    )
    dps.add_argument(
        "--dp-scheduled", action="append", default=[], metavar="DP", help="a DP on a schedule (the window below)"
    )
    dps.add_argument(
        "--dp-schedule-period-s",
        type=typed(positive_float, "seconds"),
        default=d.dp_schedule_period_s,
        help="a scheduled DP's window opens once per period...",
    )
    dps.add_argument(
        "--dp-schedule-open-s",
        type=typed(non_negative_float, "seconds"),
        default=d.dp_schedule_open_s,
        help="... for this long",
    )


def _print_banner(emulator: Emulator, settings: EmulatorSettings, source: str, out: TextIO) -> None:
    print(f"WS-Man endpoint: {emulator.url}", file=out)
    if source == "generated":
        # Printed once, on stdout only: this is a dev tool and the operator needs it to log in.
        print(f"credentials: user {settings.username}, generated password: {settings.password}", file=out)
    else:
        print(f"credentials: user {settings.username}, password from {source}", file=out)
    print(f"admin API: {emulator.admin_url} (HTTP Basic, same credentials)", file=out)
    if emulator.ca_cert_path:
        print(f"CA certificate (pass as ca_trust_path): {emulator.ca_cert_path}", file=out)
    print(
        f"site {settings.site_code}, {settings.package_count} packages, auth {','.join(settings.auth_modes)}, "
        f"allow_unencrypted={settings.allow_unencrypted}; Ctrl-C or SIGTERM stops",
        file=out,
    )
    out.flush()


def main(argv: Sequence[str] | None = None, *, environ: dict[str, str] | None = None) -> int:
    """Run the emulator until interrupted; 0 on a clean stop, 1 when it cannot start, 2 on bad flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_handshake_logging()  # even at --log-level DEBUG, NTLM tokens are never written
    try:
        password, source = _password(args, dict(os.environ) if environ is None else environ)
        settings = settings_from_args(args, password)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    try:
        emulator = Emulator(settings).start()
    except (OSError, ValueError) as exc:
        print(f"emulator: cannot start: {exc}", file=sys.stderr)
        return 1
    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        _print_banner(emulator, settings, source, sys.stdout)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        emulator.stop()
    return 0
