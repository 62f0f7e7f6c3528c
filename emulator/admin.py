"""The emulator's control and observation API (JSON under `/admin/`).

Why `/admin/` and not `/wsman`: the WS-Man path must behave exactly like a WinRM listener
(every POST is a SOAP operation that counts for fault injection, quotas and statistics, and
WinRM answers anything else with 404/405). A separate prefix on the same port keeps that
exact, needs no second port to expose, and a real WinRM server answers 404 there, so a
client can never mistake one for the other.

Why it needs credentials: the routes flip medium readiness, inject faults and read the call
log, so an unauthenticated path would be a backdoor around the listener's authentication.
It takes HTTP Basic with the emulator's own credentials on any transport (over plain HTTP
they travel readable, like WinRM's AllowUnencrypted Basic: use TLS off localhost).

`AdminApi.handle(method, path, body)` is pure routing (no sockets): the server authenticates
and writes what it returns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator.concurrency import ConcurrencyMeter
from emulator.fault_injection import MAX_LATENCY_S, MAX_QUEUED_FAULTS, FaultPlan, parse_latency_distribution
from emulator.stats import ServerStats, percentile

__all__ = [
    "ADMIN_PREFIX",
    "AdminApi",
    "AdminResponse",
    "ProviderApi",
    "ReplyLike",
    "ServerStats",
    "percentile",
]

ADMIN_PREFIX = "/admin/"
ADMIN_REALM_CHALLENGE = 'Basic realm="sccm-emulator-admin"'


class ReplyLike(Protocol):
    """What `Provider.handle` / `fault_reply` return (emulator.wsman.WsmanReply)."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


class ProviderApi(Protocol):
    """The protocol core's surface the server and the admin routes use (emulator.sms.Provider)."""

    def handle(self, envelope: bytes, *, user: str) -> ReplyLike: ...

    def fault_reply(self, kind: Any, envelope: bytes) -> ReplyLike: ...

    def refresh_target(self, envelope: bytes) -> str | None: ...

    def refresh_pending(self, package_id: str) -> bool: ...

    def set_medium_ready(self, package_id: str | None = None, ready: bool = True) -> list[str]: ...

    def package(self, package_id: str) -> dict[str, Any] | None: ...

    def packages(self) -> list[dict[str, Any]]: ...

    def call_log(self) -> dict[str, Any]: ...

    def call_totals(self) -> dict[str, int]: ...

    def reset_log(self) -> None: ...

    def distmgr(self) -> dict[str, Any]: ...

    def control_distmgr(
        self, *, time_per_package_s: float | None = None, hold: bool | None = None, drain: bool = False
    ) -> dict[str, Any]: ...

    def deny_access(self, package_id: str) -> None: ...

    def distribution(self) -> dict[str, Any]: ...

    def control_distribution(
        self,
        *,
        dp: str | None = None,
        offline: bool | None = None,
        failure_share: float | None = None,
        schedule: tuple[float | None, float] | None = None,
        clear_schedule: bool = False,
        hold: bool | None = None,
    ) -> dict[str, Any]: ...

    def distribution_rows(self, package_id: str) -> list[dict[str, Any]] | None: ...

    def allow_access(self, package_id: str) -> None: ...


@dataclass(frozen=True)
class AdminResponse:
    """A JSON answer: status, payload, extra headers (e.g. Allow on 405)."""

    status: int
    payload: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps(self.payload, sort_keys=True).encode()


class BadRequestError(ValueError):
    """The request body is not what the route expects (answered 400 with the message)."""


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> AdminResponse:
    return AdminResponse(status, {"error": message}, headers or {})


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequestError("body must be a JSON object")
    return value


Handler = Callable[[str, bytes], AdminResponse]


def _counted_items(request: Mapping[str, Any], field_name: str, name: str) -> list[dict[str, Any]]:
    """`request[field_name]`: a list of {name: str, "count": int} (ValueError otherwise; [] when absent)."""
    items = request.get(field_name, [])
    if not isinstance(items, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get(name), str)
        and isinstance(item.get("count", 1), int)
        and not isinstance(item.get("count", 1), bool)
        for item in items
    ):
        raise ValueError(f'{field_name} must be a list of {{"{name}": str, "count": int}}')
    return items


def _schedule(request: Mapping[str, Any]) -> tuple[tuple[float | None, float] | None, bool]:
    """(schedule, clear) from a request's "schedule": a window, {"closed": true}, or null (none)."""
    if "schedule" not in request:
        return None, False
    value = request["schedule"]
    if value is None:
        return None, True
    if not isinstance(value, dict) or set(value) - {"period_s", "open_s", "closed"}:
        raise BadRequestError('schedule must be {"period_s": s, "open_s": s}, {"closed": true} or null')
    if value.get("closed") is True:
        return (None, 0.0), False

    def seconds(name: str) -> float:
        item = value.get(name)
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 <= item < math.inf:
            raise BadRequestError(f"schedule.{name} must be a finite number of seconds >= 0")
        return float(item)

    period_s, open_s = seconds("period_s"), seconds("open_s")
    if period_s <= 0:
        raise BadRequestError("schedule.period_s must be > 0")
    return (period_s, open_s), False


class AdminApi:
    """Routes of `/admin/`: health, packages, medium, calls, distmgr, distribution, faults, stats, concurrency."""

    def __init__(
        self,
        *,
        provider: ProviderApi,
        faults: FaultPlan,
        stats: ServerStats,
        concurrency: ConcurrencyMeter,
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        self._provider = provider
        self._faults = faults
        self._stats = stats
        self._concurrency = concurrency
        self._describe = describe
        self._routes: dict[str, dict[str, Handler]] = {
            "health": {"GET": self._health},
            "packages/<id>": {"GET": self._package},
            "distribution/packages/<id>": {"GET": self._distribution_rows},
            "packages": {"GET": self._packages},
            "medium": {"POST": self._medium},
            "calls": {"GET": self._calls},
            "calls/totals": {"GET": self._calls_totals},
            "calls/reset": {"POST": self._calls_reset},
            "distmgr": {"GET": self._distmgr_get, "POST": self._distmgr_post},
            "distribution": {"GET": self._distribution_get, "POST": self._distribution_post},
            "faults": {"GET": self._faults_get, "POST": self._faults_post, "DELETE": self._faults_delete},
            "stats": {"GET": self._stats_get},
            "stats/reset": {"POST": self._stats_reset},
            "concurrency": {"GET": self._concurrency_get},
            "concurrency/reset": {"POST": self._concurrency_reset},
        }

    def handle(self, method: str, path: str, body: bytes) -> AdminResponse:
        """Answer one admin request (`path` starts with /admin/; query strings are ignored)."""
        route = path.split("?", 1)[0].removeprefix(ADMIN_PREFIX).strip("/")
        argument = ""
        if route.startswith("packages/"):
            route, argument = "packages/<id>", route.removeprefix("packages/")
        elif route.startswith("distribution/packages/"):
            route, argument = "distribution/packages/<id>", route.removeprefix("distribution/packages/")
        methods = self._routes.get(route)
        if methods is None:
            return _error(404, f"no admin route {path.split('?', 1)[0]!r}")
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            return _error(405, f"method {method} not allowed here", {"Allow": allowed})
        try:
            return handler(argument, body)
        except BadRequestError as exc:
            return _error(400, str(exc))

    def _health(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, {"status": "ok", **self._describe()})

    def _packages(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, {"packages": self._provider.packages()})

    def _package(self, package_id: str, _body: bytes) -> AdminResponse:
        package = self._provider.package(package_id)
        if package is None:
            return _error(404, f"no package {package_id!r}")
        return AdminResponse(200, package)

    def _medium(self, _argument: str, body: bytes) -> AdminResponse:
        request = _json_object(body)
        package_id = request.get("package_id")
        ready = request.get("ready", True)
        if package_id is not None and not isinstance(package_id, str):
            raise BadRequestError("package_id must be a string (or omitted / null for every package)")
        if not isinstance(ready, bool):
            raise BadRequestError("ready must be true or false")
        if package_id is not None and self._provider.package(package_id) is None:
            return _error(404, f"no package {package_id!r}")
        changed = self._provider.set_medium_ready(package_id, ready)
        return AdminResponse(200, {"changed": changed, "ready": ready})

    def _calls(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, self._provider.call_log())

    def _calls_totals(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, {"totals": self._provider.call_totals()})

    def _calls_reset(self, _argument: str, _body: bytes) -> AdminResponse:
        self._provider.reset_log()
        return AdminResponse(200, {"reset": True})

    def _distmgr_get(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, self._provider.distmgr())

    def _distmgr_post(self, _argument: str, body: bytes) -> AdminResponse:
        request = _json_object(body)
        unknown = set(request) - {"time_per_package_s", "hold", "drain"}
        if unknown:
            raise BadRequestError(f"unknown fields: {', '.join(sorted(unknown))}")
        # Validate everything before changing anything, so a bad request changes nothing.
        seconds = request.get("time_per_package_s")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf
        ):
            raise BadRequestError("time_per_package_s must be a finite number >= 0")
        hold, drain = request.get("hold"), request.get("drain", False)
        if not (hold is None or isinstance(hold, bool)) or not isinstance(drain, bool):
            raise BadRequestError("hold and drain must be true or false")
        time_per_package_s = None if seconds is None else float(seconds)
        snapshot = self._provider.control_distmgr(time_per_package_s=time_per_package_s, hold=hold, drain=drain)
        return AdminResponse(200, snapshot)

    def _distribution_get(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, self._provider.distribution())

    def _distribution_rows(self, package_id: str, _body: bytes) -> AdminResponse:
        rows = self._provider.distribution_rows(package_id)
        if rows is None:
            return _error(404, f"no package {package_id!r}")
        return AdminResponse(200, {"package_id": package_id.upper(), "rows": rows})

    def _distribution_post(self, _argument: str, body: bytes) -> AdminResponse:
        """Inject DP faults: {"dp": "DP03", "offline": bool, "failure_share": 0-1, "schedule":
        {"period_s": s, "open_s": s} | {"closed": true} | null} and/or {"hold": bool}."""
        request = _json_object(body)
        unknown = set(request) - {"dp", "offline", "failure_share", "schedule", "hold"}
        if unknown:
            raise BadRequestError(f"unknown fields: {', '.join(sorted(unknown))}")
        dp, offline, hold = request.get("dp"), request.get("offline"), request.get("hold")
        if dp is not None and not isinstance(dp, str):
            raise BadRequestError("dp must be a DP name (DP03 or its FQDN)")
        if not (offline is None or isinstance(offline, bool)) or not (hold is None or isinstance(hold, bool)):
            raise BadRequestError("offline and hold must be true or false")
        share = request.get("failure_share")
        if share is not None and (isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1):
            raise BadRequestError("failure_share must be a number between 0 and 1")
        schedule, clear_schedule = _schedule(request)
        if dp is None and (offline is not None or share is not None or "schedule" in request):
            raise BadRequestError("dp is required to change a DP's faults")
        try:
            snapshot = self._provider.control_distribution(
                dp=dp,
                offline=offline,
                failure_share=None if share is None else float(share),
                schedule=schedule,
                clear_schedule=clear_schedule,
                hold=hold,
            )
        except ValueError as exc:
            return _error(404 if "no DP named" in str(exc) else 400, str(exc))
        return AdminResponse(200, snapshot)

    def _faults_get(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, self._faults.snapshot())

    def _faults_post(self, _argument: str, body: bytes) -> AdminResponse:
        request = _json_object(body)
        unknown = set(request) - {"rates", "latency_ms", "latency_distribution", "next", "lose_invoke_while_pending"}
        if unknown:
            raise BadRequestError(f"unknown fields: {', '.join(sorted(unknown))}")
        try:
            self._apply_faults(request)
        except (TypeError, ValueError) as exc:
            raise BadRequestError(str(exc)) from exc
        return AdminResponse(200, self._faults.snapshot())

    def _apply_faults(self, request: dict[str, Any]) -> None:
        # Validate everything before changing anything, so a bad request leaves the plan intact.
        rates = request.get("rates", {})
        if not isinstance(rates, dict) or not all(
            isinstance(rate, int | float) and not isinstance(rate, bool) for rate in rates.values()
        ):
            raise ValueError("rates must be an object of kind -> number")
        latency_ms = request.get("latency_ms")
        if latency_ms is not None and (isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float)):
            raise ValueError("latency_ms must be a number")
        if latency_ms is not None and not 0 <= latency_ms <= MAX_LATENCY_S * 1000.0:
            raise ValueError(f"latency_ms must be between 0 and {MAX_LATENCY_S * 1000.0:g}")
        distribution = request.get("latency_distribution")
        if distribution is not None:
            distribution = parse_latency_distribution(str(distribution))
        queued = _counted_items(request, "next", "kind")
        aimed = _counted_items(request, "lose_invoke_while_pending", "package_id")
        current = self._faults.snapshot()
        probe = FaultPlan(rates={**current["rates"], **rates})
        if latency_ms is not None:
            probe.set_latency(latency_ms / 1000.0, distribution)
        for item in queued:
            probe.inject_next(item["kind"], item.get("count", 1))
        for item in aimed:
            probe.lose_invoke_while_pending(item["package_id"], item.get("count", 1))
        armed = sum(current["lose_invoke_while_pending"].values()) + sum(item.get("count", 1) for item in aimed)
        if armed > MAX_QUEUED_FAULTS:
            raise ValueError(f"at most {MAX_QUEUED_FAULTS} lost Invokes can be armed")
        if len(current["next"]) + len(probe.snapshot()["next"]) > MAX_QUEUED_FAULTS:
            already = len(current["next"])
            raise ValueError(f"at most {MAX_QUEUED_FAULTS} injected faults can be queued ({already} already are)")
        self._faults.set_rates(rates)
        if latency_ms is not None or distribution is not None:
            current_ms = self._faults.snapshot()["latency_ms"]
            self._faults.set_latency((latency_ms if latency_ms is not None else current_ms) / 1000.0, distribution)
        for item in queued:
            self._faults.inject_next(item["kind"], item.get("count", 1))
        for item in aimed:
            self._faults.lose_invoke_while_pending(item["package_id"], item.get("count", 1))

    def _faults_delete(self, _argument: str, _body: bytes) -> AdminResponse:
        self._faults.clear()
        return AdminResponse(200, self._faults.snapshot())

    def _stats_get(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, {**self._stats.snapshot(), "in_flight": self._describe().get("in_flight", {})})

    def _stats_reset(self, _argument: str, _body: bytes) -> AdminResponse:
        self._stats.reset()
        return AdminResponse(200, {"reset": True})

    def _concurrency_get(self, _argument: str, _body: bytes) -> AdminResponse:
        return AdminResponse(200, self._concurrency.snapshot())

    def _concurrency_reset(self, _argument: str, _body: bytes) -> AdminResponse:
        self._concurrency.reset()
        return AdminResponse(200, self._concurrency.snapshot())
