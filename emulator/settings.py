"""Emulator settings: one frozen dataclass, built by the CLI or by tests.

The emulator is a stand-in for a ConfigMgr SMS Provider reached through WinRM. Every knob
lives here with its default so the CLI flags, the README table and in-process users agree.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Literal

AuthMode = Literal["basic", "ntlm", "kerberos"]
MediumFailureMode = Literal["return_value", "fault"]
LatencyDistribution = Literal["fixed", "uniform", "exponential"]

# Fault kinds the emulator can inject at random, by rate (0.0-1.0 each).
FAULT_KINDS: tuple[str, ...] = (
    "http_503",
    "connection_reset",
    # The provider does the work, then the connection drops before the reply: a lost reply.
    "lost_reply",
    "timeout_fault",
    "quota_fault",
    "generic_failure",
)


@dataclass(frozen=True)
class FaultRates:
    """Per-request probability of each injected fault kind (seeded, so runs repeat)."""

    http_503: float = 0.0
    connection_reset: float = 0.0
    lost_reply: float = 0.0
    timeout_fault: float = 0.0
    quota_fault: float = 0.0
    generic_failure: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {kind: getattr(self, kind) for kind in FAULT_KINDS}


@dataclass(frozen=True)
class EmulatorSettings:
    host: str = "127.0.0.1"
    port: int = 5985  # 0 = pick a free port (tests)
    site_code: str = "PS1"
    machine: str = "sccm-emulator.lab.local"

    # Authentication, as a WinRM listener would be configured.
    username: str = "LAB\\sccm-svc"
    password: str = field(default="", repr=False)  # empty -> generated and printed by the CLI
    auth_modes: tuple[AuthMode, ...] = ("basic", "ntlm")
    # Accounts that authenticate (Basic and NTLM, with `password`) but get WMI access denied,
    # like accounts without rights on the SMS namespace.
    denied_users: tuple[str, ...] = ()
    # Kerberos (auth mode "kerberos"): the keytab with the listener's SPN keys (HTTP/<host>@REALM),
    # read through the KRB5_CONFIG realm of the process; any other SPN's ticket is refused.
    kerberos_keytab: str | None = None
    allow_unencrypted: bool = False  # WinRM's AllowUnencrypted: Basic over plain HTTP
    # TLS: None -> plain HTTP; "self-signed" -> generate a CA + server cert on start.
    tls: Literal["off", "self-signed", "files"] = "off"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    # Catalogue.
    package_count: int = 50
    seed: int = 1
    compress_share: float = 0.2  # share of packages with PkgSourceFlag = 3 (STORAGE_COMPRESS)
    medium_not_ready_share: float = 0.5  # share of STORAGE_COMPRESS packages whose medium starts not ready
    # The medium of a not-ready package becomes ready after this many seconds / failed
    # refresh attempts (None = only when told so through the control interface).
    medium_ready_after_s: float | None = None
    medium_ready_after_attempts: int | None = None
    medium_failure_mode: MediumFailureMode = "return_value"
    # Distribution Manager: accepted refreshes queue FIFO for `distmgr_threads` workers (ConfigMgr's
    # "Maximum number of packages", default 3), each taking this long per package (0 = at once).
    distmgr_threads: int = 3
    distmgr_time_per_package_s: float = 0.0
    # The old name of distmgr_time_per_package_s (it was a delay per refresh, with no queue):
    # accepted at construction and folded in, never stored.
    distmgr_delay_s: InitVar[float | None] = None
    # Distribution points (emulator.sms.pkgxfer): every package is on every DP of the site,
    # DP01..DP<dp_count>, the last `pull_dp_count` of them pull DPs. Once DistMgr has processed
    # a refresh, PkgXferMgr copies it to each DP, `dp_jobs` push transfers at a time, each taking
    # `dp_copy_time_s` (a pull DP `pull_dp_copy_factor` times as long); a failed copy is retried
    # `dp_retry_count` times, `dp_retry_delay_s` apart (ConfigMgr: 100 times, 30 min apart), then
    # the DP is failed for that package. Faults by DP short name (DP03): offline, failing
    # `dp_failure_share` of transfers, or on a schedule (transfers start only in the first
    # `dp_schedule_open_s` of every `dp_schedule_period_s`).
    dp_count: int = 5
    pull_dp_count: int = 1
    dp_jobs: int = 15
    dp_copy_time_s: float = 0.0
    pull_dp_copy_factor: float = 3.0
    dp_retry_count: int = 3
    dp_retry_delay_s: float = 0.0
    dp_offline: tuple[str, ...] = ()
    dp_failing: tuple[str, ...] = ()
    dp_failure_share: float = 0.3
    dp_scheduled: tuple[str, ...] = ()
    dp_schedule_period_s: float = 3600.0
    dp_schedule_open_s: float = 600.0
    # A hierarchy, as the source site's provider reports it: "DP04=S01" makes DP04 a DP of child
    # site S01 (its NAL path and rows carry S01); the source site's summarizer lists it with its own.
    dp_child_sites: tuple[str, ...] = ()

    # Operational behaviour.
    latency_s: float = 0.0
    latency_distribution: LatencyDistribution = "fixed"
    fault_rates: FaultRates = field(default_factory=FaultRates)
    idle_timeout_s: float = 120.0  # HTTP.sys closes idle keep-alive connections (~2 min)
    # WinRM's MaxConcurrentOperationsPerUser defaults to 1500. 25 is this emulator's choice, to make
    # the quota fault easy to reach in tests: no documented SMS Provider limit says so.
    max_concurrent_operations_per_user: int = 25
    max_envelope_size_bytes: int = 512_000

    def __post_init__(self, distmgr_delay_s: float | None) -> None:
        if distmgr_delay_s is None:
            return
        if self.distmgr_time_per_package_s not in (0.0, distmgr_delay_s):
            raise ValueError("distmgr_delay_s is the old name of distmgr_time_per_package_s: give only one")
        # A frozen dataclass sets its fields through object.__setattr__, as its own __init__ does.
        object.__setattr__(self, "distmgr_time_per_package_s", distmgr_delay_s)
