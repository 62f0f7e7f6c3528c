"""Typed, frozen settings, read once from the environment and an optional TOML file.

Environment variables use the prefix `SCCM_REFRESH_` and `__` for nesting, e.g.
`SCCM_REFRESH_BROKER_URL`, `SCCM_REFRESH_PROVIDERS__PS1__PASSWORD_FILE`. A TOML file named by
`SCCM_REFRESH_CONFIG_FILE` supplies the same fields; the environment wins over the file.

Secrets are `SecretStr` (masked in `repr`, logs and `model_dump`) and are read only by
`ProviderSettings.secret_password()` at the moment a WinRM session is built.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.broker import broker_url_problem
from errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "ApiSettings",
    "FollowSettings",
    "LimitSettings",
    "ProviderSettings",
    "RetryPolicy",
    "RetrySettings",
    "Settings",
    "check_basic_password",
    "get_settings",
    "reset_settings",
]

ENV_PREFIX = "SCCM_REFRESH_"
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG_FILE"

Transport = Literal["ntlm", "kerberos", "basic", "credssp", "certificate"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(BaseModel):
    """One retry policy as data: capped exponential backoff, a `jitter` share of each delay drawn at random, a deadline.

    `max_attempts` counts calls, the first included; `deadline_s` bounds the time from the
    first attempt, whichever comes first ends the retrying.
    """

    model_config = _FROZEN

    max_attempts: int = Field(ge=1, le=10_000)
    initial_backoff_s: float = Field(ge=0)
    max_backoff_s: float = Field(ge=0)
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="share of each delay drawn at random")
    deadline_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _caps_are_ordered(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self


class RetrySettings(BaseModel):
    """Every retry of a request, each its own policy, in one place (docs/retries.md has the table)."""

    model_config = _FROZEN

    # Short blips inside one task run (connection reset, 503, read timeout): seconds. The same
    # policy bounds an Invoke whose reply was lost, tried again only after the invoke fence says
    # the first one did not land (worker/usecase/attempt.py).
    in_call: RetryPolicy = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=2.0, deadline_s=30)
    # Transient errors that outlast in-call retries: the task is re-queued with a countdown.
    transient: RetryPolicy = RetryPolicy(max_attempts=8, initial_backoff_s=5.0, max_backoff_s=300.0, deadline_s=3600)
    # STORAGE_COMPRESS source medium not ready: minutes to hours, never one long countdown.
    medium: RetryPolicy = RetryPolicy(
        max_attempts=200, initial_backoff_s=30.0, max_backoff_s=900.0, jitter=0.1, deadline_s=6 * 3600
    )
    # A final outcome that cannot be recorded (the outcome Redis down past the publisher's own
    # deadline, `limits.publish_deadline_s`): the message is re-queued as it arrived, after this
    # (capped by `limits.max_countdown_s`), for as long as it takes. Short: the request is back
    # within seconds of Redis taking writes again, and a try costs one failed Redis command, not
    # a provider call (while the broker's Redis itself refuses, the re-queue waits unacked anyway).
    publish_requeue_s: float = Field(default=5.0, gt=0, le=3600)
    # A bulk's enumeration failing with a transient error: the enumeration task is re-queued,
    # 10 times 30 s apart (max_attempts counts the first), then the bulk fails.
    enumeration: RetryPolicy = RetryPolicy(
        max_attempts=11, initial_backoff_s=30.0, max_backoff_s=30.0, multiplier=1.0, jitter=0.0
    )

    @model_validator(mode="before")
    @classmethod
    def _partial_policies_keep_their_defaults(cls, data: Any) -> Any:
        """`SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S=60` changes one field, not the whole policy."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is not None and isinstance(value, dict) and isinstance(field.default, RetryPolicy):
                merged[name] = {**field.default.model_dump(), **value}
        return merged


class LimitSettings(BaseModel):
    model_config = _FROZEN

    # Every countdown is capped below the broker visibility timeout (kombu #337): a longer
    # wait is split into several re-queues.
    visibility_timeout_s: int = Field(default=3600, ge=5)
    max_countdown_s: int = Field(default=900, ge=1)
    # Keep the defaults in production; the crash tests shrink both to see a redelivery quickly.
    # After an accepted refresh, optionally poll SourceVersion until it increases.
    verify_timeout_s: float = Field(default=30.0, ge=0, le=600)
    verify_poll_s: float = Field(default=1.0, gt=0, le=60)
    stream_maxlen: int = Field(default=100_000, ge=100)
    final_marker_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    publish_deadline_s: float = Field(default=60.0, gt=0)
    # Per-provider concurrency cap (PROVIDERS__<SITE>__MAX_CONCURRENCY slots): a slot is leased for
    # one attempt and renewed every third of `slot_lease_s` while the attempt runs
    # (worker/stores/lease_keeper.py), so a worker that dies holding one frees it within `slot_lease_s`.
    # A request that finds none free parks in the site's line and is woken by the release that
    # frees one (worker/stores/slots.py); a woken request's message that never comes back lapses
    # with this lease and is sent again.
    slot_lease_s: float = Field(default=30.0, ge=1, le=3600)
    # One delivery of a request attempts it at a time (the attempt lock): a lease renewed the same
    # way, so a SIGKILLed attempt's request is taken up again within this many seconds.
    attempt_lock_s: int = Field(default=20, ge=2, le=3600)
    # Waiters that poll rather than park (a lane's line: boot images one at a time per site) re-poll
    # after an estimate of their turn, between these bounds; so does a parked request when the
    # worker has no way to park it (unit tests: worker/usecase/execute.py).
    slot_wait_min_s: float = Field(default=0.02, gt=0, le=300)
    slot_wait_max_s: float = Field(default=30.0, gt=0, le=900)
    # Bulk pacing: at most the site's max_concurrency plus this many children are outstanding at
    # once (a few ready to take a slot the moment one frees), and a safety-net pump runs this
    # often while a bulk lives (refill, re-send lost children).
    bulk_window_extra: int = Field(default=2, ge=0, le=1000)
    bulk_pump_interval_s: float = Field(default=10.0, ge=0.1, le=900)
    # A child taken from a bulk's pending list whose first delivery has not checked in this long
    # is sent again by the pump: its dispatcher may have died between taking it and publishing it
    # (nothing else would bring it back before the stalled-child bound, hours with the defaults).
    bulk_undelivered_s: float = Field(default=20.0, ge=1, le=86_400)
    # The watch over live requests (worker/stores/request_watch.py): a request not seen again within its
    # countdown (or the task time limit) plus the visibility timeout plus this margin is sent
    # again; workers look for such requests this often.
    watch_margin_s: float = Field(default=30.0, ge=0, le=3600)
    # How often each worker hands out slots freed by lapsed leases (a holder that died) and wakes
    # again a woken request whose message never came back (worker/stores/slots.py). Releases do it
    # too; this is for a site where nothing is released. A lost wake costs slot_lease_s plus this.
    slot_sweep_interval_s: float = Field(default=5.0, ge=0.1, le=300)
    watch_sweep_interval_s: float = Field(default=15.0, ge=0.1, le=900)

    @model_validator(mode="after")
    def _countdown_below_visibility(self) -> LimitSettings:
        if self.max_countdown_s >= self.visibility_timeout_s:
            raise ValueError("max_countdown_s must be below visibility_timeout_s")
        if self.slot_wait_min_s > self.slot_wait_max_s:
            raise ValueError("slot_wait_min_s must not exceed slot_wait_max_s")
        return self


class FollowSettings(BaseModel):
    """Following a request with until=distributed to every DP (docs/outcomes.md, "Following to every DP").

    Between polls the request's message waits in the broker (a countdown): no thread, no provider
    slot. Polls back off from `first_poll_s`, times `poll_multiplier`, up to `max_poll_s`; the
    request ends `distribution_timed_out` once `deadline_s` has passed since acceptance.
    """

    model_config = _FROZEN

    first_poll_s: float = Field(default=60.0, gt=0, le=3600)
    poll_multiplier: float = Field(default=2.0, ge=1, le=10)
    max_poll_s: float = Field(default=1800.0, gt=0, le=86_400)
    deadline_s: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    # A DP retrying a copy this long counts as failed (ConfigMgr retries for about 50 hours).
    retrying_failed_after_s: float = Field(default=6 * 3600.0, ge=0, le=7 * 86_400)
    # Per-DP rows an outcome lists at most (stragglers first); the rest are counted.
    max_dp_rows: int = Field(default=25, ge=0, le=1000)
    # DPs one followed package may target; a package on more is followed on the first ones only.
    max_targets: int = Field(default=1000, ge=1, le=10_000)
    # Per-site snapshots (worker/stores/follow_snapshots.py): every package followed at a site is
    # read in chunks of 200 once per `snapshot_s` by one worker, and the others answer from it
    # (shared through Redis); 0 turns them off (each request reads its own). A poll that finds the
    # snapshot being read waits up to `snapshot_wait_s` for it (a thread, no provider slot held),
    # then is skipped. At most `snapshot_max_packages` packages per site and kind go into one snapshot.
    snapshot_s: float = Field(default=30.0, ge=0, le=3600)
    snapshot_wait_s: float = Field(default=2.0, ge=0, le=60)
    snapshot_max_packages: int = Field(default=20_000, ge=1, le=200_000)
    # In phase two a snapshot reads every package's rollup and DP rows only where a verdict may be
    # near (worker/domain/follow_triage.py); a package with copies in flight gets its rows about
    # once per `rows_refresh_s` (so long retries are seen); at most `snapshot_s`: every interval.
    rows_refresh_s: float = Field(default=600.0, ge=0, le=86_400)
    # Redistribution (opt-in: a request's `redistribute_failed`, or its site's): a target DP failed
    # (State 3), or retrying longer than `redistribute_after_s`, gets RefreshNow at most once per
    # package and DP per `redistribute_window_s` (a Redis marker). A redistributed DP still reading
    # State 3 counts as retrying until it is seen in another state, or for `redistribute_settle_s`.
    redistribute_after_s: float = Field(default=4 * 3600.0, ge=0, le=7 * 86_400)
    redistribute_window_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    redistribute_settle_s: float = Field(default=1800.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _first_below_max(self) -> FollowSettings:
        if self.first_poll_s > self.max_poll_s:
            raise ValueError("first_poll_s must not exceed max_poll_s")
        if self.snapshot_s > self.first_poll_s:
            # An older snapshot would answer a poll with what the previous poll already saw.
            raise ValueError("snapshot_s must not exceed first_poll_s (0 turns snapshots off)")
        return self


class ApiSettings(BaseModel):
    """The HTTP trigger API (`sccm-refresh api`): listen address, auth, limits (README, "HTTP API")."""

    model_config = _FROZEN

    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=8080, ge=0, le=65535)
    # Lines `sha256:<hex> <role> <name>`; the API refuses to start without one (unless
    # --insecure-no-auth on loopback).
    token_file: Path | None = None
    # The token file is checked for changes this often (on a request) and re-read when it
    # changed; 0 reads it at start only.
    token_reload_s: float = Field(default=2.0, ge=0, le=3600)
    # Checked against Content-Length before reading, and counted while reading a chunked body.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_packages_per_request: int = Field(default=500, ge=1, le=10_000)
    # A retried POST with the same Idempotency-Key and body gets the first answer this long.
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    # How long a key stays claimed by a POST still running (or one that died mid-way).
    idempotency_pending_ttl_s: int = Field(default=60, ge=5, le=3600)
    # Threads for the blocking producer calls (Celery's apply_async); also caps them in flight.
    producer_threads: int = Field(default=8, ge=1, le=256)
    # Celery task-sent events for what the API enqueues (Flower's SENT state): a second publish
    # per request. Workers' task events (received, started, ...) are not affected.
    task_sent_events: bool = False
    # Server-Sent Events: concurrent streams, XREAD BLOCK slice, entries per read, heartbeat,
    # and the longest life of one stream (clients reconnect with Last-Event-ID).
    max_event_streams: int = Field(default=64, ge=1, le=10_000)
    event_block_ms: int = Field(default=1000, ge=10, le=4000)
    event_batch: int = Field(default=100, ge=1, le=1000)
    event_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    event_max_duration_s: float = Field(default=3600.0, gt=0, le=86_400)
    # One send to an event stream's client may wait this long for the socket (a client that
    # stopped reading): past it the connection is dropped and its slot freed.
    event_send_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Streams one caller (token name) may hold at once: no reader takes every slot.
    max_event_streams_per_caller: int = Field(default=16, ge=1, le=10_000)
    # Streams catching up on a backlog longer than one batch (a replay: `after=0-0`, an old
    # Last-Event-ID) at once, over all callers; 503 beyond.
    max_event_replays: int = Field(default=4, ge=1, le=10_000)
    # /readyz asks the workers which queues they consume (a broadcast that waits timeout_s)
    # and keeps the answer this long.
    readiness_timeout_s: float = Field(default=1.0, gt=0, le=30)
    readiness_cache_s: float = Field(default=5.0, ge=0, le=300)
    # Requests in flight (headers received, response not finished; event streams included):
    # past this many, 503 for every route but /healthz and /readyz. A connection still sending
    # its request does not count (it has the deadlines below).
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    # Connections one client address may hold open at once (0: no cap; behind a reverse proxy
    # every client has the proxy's address, so there the proxy enforces it).
    max_connections_per_client: int = Field(default=64, ge=0, le=100_000)
    # A request's line and headers must arrive within header_timeout_s of its first byte (of
    # the connection, for the first request), its body within body_timeout_s of the headers:
    # 408 and the connection closed otherwise, however steadily the bytes trickle.
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # Request line and headers together (431 beyond), and how many header lines.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=8, le=1000)

    @model_validator(mode="after")
    def _streams_fit_connections(self) -> ApiSettings:
        if self.max_event_streams > self.max_connections:
            raise ValueError("max_event_streams must not exceed max_connections")
        return self


class ProviderSettings(BaseModel):
    """How to reach the SMS Provider of one site over WinRM."""

    model_config = _FROZEN

    endpoint: str = Field(description="WS-Man URL, e.g. https://sccm01.corp.example:5986/wsman")
    transport: Transport = "ntlm"
    username: str = ""
    password: SecretStr | None = None
    password_file: Path | None = None
    # Kerberos (transport 'kerberos', docs/kerberos.md): `username` is the principal
    # (sccm-svc@CORP.EXAMPLE); its keys come from `keytab_file` (preferred: no password on disk)
    # or from the password. `spn` overrides the SPN derived from the endpoint's host
    # (HTTP/<host>), e.g. for a load-balanced name or an alias the SPN is not registered on.
    keytab_file: Path | None = None
    spn: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9-]*/[A-Za-z0-9.-]+(@[A-Za-z0-9.-]+)?$")
    cert_pem: Path | None = None
    cert_key_pem: Path | None = None
    server_cert_validation: Literal["validate", "ignore"] = "validate"
    ca_trust_path: Path | None = None
    message_encryption: Literal["auto", "always", "never"] = "auto"
    # WinRM's AllowUnencrypted, client side: Basic over plain http:// sends the password in the
    # clear on every request, so it must be asked for explicitly.
    allow_unencrypted: bool = False
    operation_timeout_s: int = Field(default=20, ge=1, le=600)
    read_timeout_s: int = Field(default=30, ge=2, le=660)
    # RefreshPkgSource on a boot image rebuilds the image before the provider answers (minutes):
    # its Invoke alone waits this long, and reads for `boot_image_read_timeout_s`. Keep that
    # below task_soft_time_limit_s (300 by default); the slot and the attempt lock it holds are
    # renewed while it waits (worker/stores/lease_keeper.py).
    boot_image_operation_timeout_s: int = Field(default=240, ge=1, le=3600)
    max_concurrency: int = Field(default=3, ge=1, le=256)
    # Every request of this site followed to every DP redistributes its failed DPs, as if it had
    # asked `redistribute_failed` (FOLLOW__REDISTRIBUTE_* bound it; docs/outcomes.md).
    redistribute_failed: bool = False

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// WS-Man URL")
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("endpoint must not embed credentials; use username/password_file")
        return value

    @model_validator(mode="after")
    def _credentials_fit_transport(self) -> ProviderSettings:
        if self.operation_timeout_s >= self.read_timeout_s:
            raise ValueError("operation_timeout_s must be below read_timeout_s (pywinrm requires it)")
        if self.transport == "certificate":
            if not (self.cert_pem and self.cert_key_pem):
                raise ValueError("transport 'certificate' needs cert_pem and cert_key_pem")
        elif self.transport == "kerberos":
            self._kerberos_credentials()
        else:
            if self.keytab_file is not None or self.spn is not None:
                raise ValueError(f"keytab_file and spn are for transport 'kerberos', not {self.transport!r}")
            if not self.username:
                raise ValueError(f"transport {self.transport!r} needs a username")
            if self.password is None and self.password_file is None:
                raise ValueError(f"transport {self.transport!r} needs password or password_file")
        if self.transport == "basic":
            if self.endpoint.startswith("http://") and not self.allow_unencrypted:
                raise ValueError(
                    "transport 'basic' over http:// sends the password in the clear: use https://, "
                    "ntlm (encrypted), or set allow_unencrypted=true"
                )
            if self.password is not None:
                check_basic_password(self.password.get_secret_value())
        return self

    def _kerberos_credentials(self) -> None:
        if not self.username:
            raise ValueError("transport 'kerberos' needs a username: the principal, e.g. sccm-svc@CORP.EXAMPLE")
        if self.keytab_file is None and self.password is None and self.password_file is None:
            raise ValueError("transport 'kerberos' needs keytab_file (preferred), password_file or password")

    @property
    def boot_image_read_timeout_s(self) -> int:
        """A boot image's Invoke reads this long: its operation timeout plus the usual margin above one."""
        return self.boot_image_operation_timeout_s + (self.read_timeout_s - self.operation_timeout_s)

    def secret_password(self) -> str:
        """The password, read at use time (a password file may be rotated without restart)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return ""
        try:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            # The path is configuration, not a secret; the content never reaches the message.
            raise ConfigError(f"cannot read password_file {str(self.password_file)!r}: {exc.strerror}") from None


def check_basic_password(password: str) -> None:
    """requests encodes Basic credentials as Latin-1; anything else fails deep inside it, with
    the password in the exception's arguments. Refuse it here, without echoing it."""
    try:
        password.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            "a password for transport 'basic' must be Latin-1 (requests encodes Basic credentials so); "
            "use ntlm or change the password"
        ) from None


class _TomlFileSource(PydanticBaseSettingsSource):
    """Settings from the TOML file named by SCCM_REFRESH_CONFIG_FILE, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        try:
            with open(path, "rb") as handle:
                return tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read {CONFIG_FILE_ENV}={path!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {path!r}: {exc}") from None


class Settings(BaseSettings):
    """Everything the producers and workers read, in one place."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="sccm-refresh", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    queue: str = Field(default="sccm-refresh", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    retry: RetrySettings = RetrySettings()
    limits: LimitSettings = LimitSettings()
    follow: FollowSettings = FollowSettings()
    api: ApiSettings = ApiSettings()
    task_soft_time_limit_s: int = Field(default=300, ge=1)
    task_time_limit_s: int = Field(default=360, ge=2)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("broker_url")
    @classmethod
    def _broker_keeps_every_message(cls, value: str) -> str:
        problem = broker_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("providers")
    @classmethod
    def _site_codes_are_valid(cls, value: dict[str, ProviderSettings]) -> dict[str, ProviderSettings]:
        normalised: dict[str, ProviderSettings] = {}
        for site_code, provider in value.items():
            if not (len(site_code) == 3 and site_code.isascii() and site_code.isalnum()):
                raise ValueError(f"site code {site_code!r} must be 3 letters or digits")
            normalised[site_code.upper()] = provider
        return normalised

    @model_validator(mode="after")
    def _time_limits_ordered(self) -> Settings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.task_time_limit_s >= self.limits.visibility_timeout_s:
            raise ValueError("task_time_limit_s must be below limits.visibility_timeout_s")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls), file_secret_settings)

    def provider(self, site_code: str) -> ProviderSettings:
        try:
            return self.providers[site_code.upper()]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise ConfigError(f"no SMS Provider configured for site {site_code!r} (configured: {known})") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; a validation error becomes one clear ConfigError."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid sccm-refresh settings: {problems}") from None


def reset_settings() -> None:
    """Forget the cached settings (tests and the demo change the environment)."""
    get_settings.cache_clear()
