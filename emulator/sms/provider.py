"""The SMS Provider behind WinRM's WMI plugin: one decrypted SOAP request in, one reply out.

Pure protocol core (no sockets): the HTTP server authenticates, decrypts and calls `handle`.
This module dispatches and answers Get, Invoke and Put (`RefreshNow` on `SMS_DistributionPoint`);
emulator.wsman parses requests and renders replies and SOAP faults, `catalogue` holds the
packages and their semantics (with Distribution Manager's queue and PkgXferMgr), `enumerations`
answers Enumerate / Pull / Release with WQL, `access` says who may see what, `calllog` records
calls, `error_replies` shapes the SMS Provider's own faults. One lock makes it thread-safe;
every call is short (no I/O, no sleeping).

Checks run in the order WinRM and WMI apply them: envelope, action, resource URI and namespace,
the caller's right to the namespace, class, method, selectors, instance, then RBAC on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Literal

from emulator.settings import EmulatorSettings
from emulator.sms import error_replies
from emulator.sms.access import AccessRules
from emulator.sms.calllog import CallLog
from emulator.sms.catalogue import Catalogue
from emulator.sms.content_status import DISTRIBUTION_POINT_CLASS
from emulator.sms.enumerations import ENUMERATION_CONTEXT_TTL_S, MAX_ENUMERATION_ITEMS, WqlEnumerations, invalid_class
from emulator.sms.instance_xml import render_instance
from emulator.sms.packages import BASE_CLASS, MEDIUM_NOT_READY_ERROR_CODE
from emulator.sms.pkgxfer import Schedule
from emulator.sms.wql import Value
from emulator.wsman import (
    ACTION_ENUMERATE,
    ACTION_GET,
    ACTION_PULL,
    ACTION_PUT,
    ACTION_RELEASE,
    OPERATION_BY_ACTION,
    WMI_OPERATION,
    Operation,
    Reject,
    SoapError,
    WsmanReply,
    WsmanRequest,
    class_resource_uri,
    parse_resource_uri,
    sms_namespace_path,
    soap,
    soap_faults,
)

__all__ = [
    "ENUMERATION_CONTEXT_TTL_S",
    "MAX_ENUMERATION_ITEMS",
    "REFRESH_METHOD",
    "InjectedFault",
    "Provider",
    "WsmanReply",
]

logger = logging.getLogger(__name__)

InjectedFault = Literal["timeout_fault", "quota_fault", "generic_failure"]

REFRESH_METHOD: Final = "RefreshPkgSource"


class Provider:
    """Answers Get / Invoke RefreshPkgSource / Put RefreshNow / Enumerate / Pull / Release for one emulated site."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_enumeration_items: int = MAX_ENUMERATION_ITEMS,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._catalogue = Catalogue(settings, clock=clock, wall_clock=wall_clock)
        self._site = settings.site_code.upper()
        self._namespace = sms_namespace_path(self._site).lower()
        self._machine = settings.machine
        self._access = AccessRules(settings.username, settings.denied_users)
        self._log = CallLog(wall_clock=wall_clock, package_count=settings.package_count)
        self._enumerations = WqlEnumerations(
            catalogue=self._catalogue,
            access=self._access,
            log=self._log,
            site_code=self._site,
            machine=self._machine,
            clock=clock,
            max_items=max_enumeration_items,
        )

    # ------------------------------------------------------------------ entry points

    def handle(self, envelope: bytes, *, user: str) -> WsmanReply:
        """Answer one decrypted SOAP request; `user` is the account the server authenticated."""
        with self._lock:
            self._log.count("requests")
            try:
                reply = WsmanReply(200, self._dispatch(envelope, user))
            except Reject as rejection:
                reply = WsmanReply(500, rejection.body)
            except Exception:
                # A bug here must look like a failing WMI provider to the client, never take the
                # server down: WinRM answers a plugin failure with a fault, and so do we.
                logger.exception("emulator provider failed on a request")
                reply = WsmanReply(500, soap_faults.internal_error(relates_to=None, machine=self._machine))
            if reply.status != 200:
                self._log.count("faults")
            return reply

    def fault_reply(self, kind: InjectedFault, envelope: bytes) -> WsmanReply:
        """Windows-shaped fault for an injected failure, RelatesTo the request's MessageID."""
        with self._lock:
            request: WsmanRequest | None = None
            relates_to: str | None
            try:
                request = soap.parse_request(envelope)
                relates_to = request.message_id
            except SoapError as exc:
                relates_to = exc.message_id
            operation = "invoke" if request is None else OPERATION_BY_ACTION.get(request.action, "invoke")
            package_id = (request.selector("PackageID") or "").upper() if request else ""
            where: dict[str, Any] = {"relates_to": relates_to, "machine": self._machine}
            if kind == "timeout_fault":
                body = soap_faults.timed_out(**where)
            elif kind == "quota_fault":
                # WinRM refuses over-quota requests before reading them: both captured quota faults
                # (tests/fixtures/windows/*quota*.xml) carry no RelatesTo.
                limit = self._settings.max_concurrent_operations_per_user
                body = soap_faults.quota_exceeded(relates_to=None, machine=self._machine, limit=limit)
            else:
                body = error_replies.site_database_failure(
                    **where,
                    site_code=self._site,
                    operation=WMI_OPERATION[operation],
                    object_path=f'PackageID="{package_id}"' if package_id else "",
                )
            self._log.count("requests")
            self._log.count("faults")
            self._record_if_known(package_id, operation, "", f"injected:{kind}")
            return WsmanReply(500, body)

    def refresh_target(self, envelope: bytes) -> str | None:
        """The PackageID an Invoke of RefreshPkgSource names (upper case); None for anything else.

        Read before the operation runs (an aimed fault asks), so nothing is checked but the shape.
        """
        try:
            request = soap.parse_request(envelope)
        except SoapError:
            return None
        resource_uri = (request.resource_uri or "").rstrip("/")
        if not resource_uri or request.action.lower() != f"{resource_uri}/{REFRESH_METHOD}".lower():
            return None
        package_id = request.selector("PackageID")
        return package_id.upper() if package_id else None

    def refresh_pending(self, package_id: str) -> bool:
        """An accepted refresh of the package is queued or processing in DistMgr (ActionInProgress 1)."""
        with self._lock:
            return self._catalogue.refresh_pending(package_id)

    # ------------------------------------------------------------------ control and observation

    def set_medium_ready(self, package_id: str | None = None, ready: bool = True) -> list[str]:
        """Make one (or, with None, every) STORAGE_COMPRESS package's medium ready / not ready."""
        with self._lock:
            return self._catalogue.set_medium_ready(package_id, ready)

    def deny_access(self, package_id: str) -> None:
        """RBAC: the configured account may no longer read or refresh this package."""
        with self._lock:
            self._access.deny(package_id)

    def allow_access(self, package_id: str) -> None:
        with self._lock:
            self._access.allow(package_id)

    def package(self, package_id: str) -> dict[str, Any] | None:
        """Current properties (JSON-ready), plus `_`-prefixed emulator state."""
        with self._lock:
            view = self._catalogue.snapshot(package_id)
            if view is not None:
                view["_access_denied"] = self._access.is_denied(view["PackageID"])
            return view

    def packages(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._catalogue.summaries()

    def call_log(self) -> dict[str, Any]:
        """Per package Gets, Invokes, accepted / rejected refreshes and events, plus the totals."""
        with self._lock:
            return self._log.snapshot()

    def call_totals(self) -> dict[str, int]:
        """The call log's totals only (requests, gets, invokes, accepted, ...): cheap at any size."""
        with self._lock:
            return self._log.totals()

    def open_enumerations(self) -> dict[str, int]:
        """Open enumeration contexts and the PackageIDs they hold (the latter capped, see MAX_ENUMERATION_ITEMS)."""
        with self._lock:
            return self._enumerations.store.counts()

    def reset_log(self) -> None:
        with self._lock:
            self._log.reset()

    # ------------------------------------------------------------------ Distribution Manager

    def distmgr(self) -> dict[str, Any]:
        """DistMgr's threads, time per package, held, queued / processing sizes and counters."""
        with self._lock:
            return self._catalogue.distmgr()

    def control_distmgr(
        self, *, time_per_package_s: float | None = None, hold: bool | None = None, drain: bool = False
    ) -> dict[str, Any]:
        """Set the time per package (packages started from now on; ValueError unless finite >= 0),
        hold (True: accepted refreshes queue, ActionInProgress stays 1) or release (False) DistMgr,
        then with `drain` process every queued or processing package now; returns `distmgr()`."""
        with self._lock:
            self._catalogue.control_distmgr(time_per_package_s=time_per_package_s, hold=hold, drain=drain)
            return self._catalogue.distmgr()

    # ------------------------------------------------------------------ distribution points

    def distribution(self) -> dict[str, Any]:
        """PkgXferMgr: settings, DPs with their faults, rows by state, open jobs, counters."""
        with self._lock:
            return self._catalogue.distribution()

    def control_distribution(
        self,
        *,
        dp: str | None = None,
        offline: bool | None = None,
        failure_share: float | None = None,
        schedule: tuple[float | None, float] | None = None,
        clear_schedule: bool = False,
        hold: bool | None = None,
    ) -> dict[str, Any]:
        """Change one DP's faults and/or hold or release PkgXferMgr (ValueError for an unknown DP or
        a bad value); `schedule` is (period_s or None for closed, open_s). Returns `distribution()`."""
        with self._lock:
            window = None
            if schedule is not None:
                window = Schedule(schedule[0], schedule[1], origin=self._clock())
            self._catalogue.control_distribution(
                dp=dp,
                offline=offline,
                failure_share=failure_share,
                schedule=window,
                clear_schedule=clear_schedule,
                hold=hold,
            )
            return self._catalogue.distribution()

    def distribution_rows(self, package_id: str) -> list[dict[str, Any]] | None:
        """One package's row on every DP (state, version, last message), None if unknown."""
        with self._lock:
            return self._catalogue.distribution_rows(package_id)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, envelope: bytes, user: str) -> bytes:
        try:
            request = soap.parse_request(envelope)
        except SoapError as exc:
            where: dict[str, Any] = {"relates_to": exc.message_id, "machine": self._machine}
            if exc.kind == "missing_header":
                header = "Action" if exc.message_id else "MessageID"
                raise Reject(soap_faults.message_header_required(**where, header=header)) from None
            raise Reject(soap_faults.schema_validation(**where, message=str(exc))) from None

        action = request.action
        if action == ACTION_GET:
            return self._get(request, user)
        if action == ACTION_ENUMERATE:
            self._log.count("enumerates")
            return self._enumerations.enumerate(request, self._target_class(request, user, "enumerate"), user)
        if action == ACTION_PULL:
            self._log.count("pulls")
            return self._enumerations.pull(request)
        if action == ACTION_RELEASE:
            return self._enumerations.release(request)
        if action == ACTION_PUT:
            return self._put(request, user)
        # [MS-WSMV] 3.1.4.1.27: a custom action is the resource URI followed by the method name.
        resource_uri = (request.resource_uri or "").rstrip("/")
        if resource_uri and action.lower().startswith(resource_uri.lower() + "/"):
            return self._invoke(request, user, action[len(resource_uri) + 1 :])
        raise Reject(soap_faults.action_not_supported(**self._where(request), action=action))

    def _where(self, request: WsmanRequest) -> dict[str, Any]:
        """The arguments every fault builder takes."""
        return {"relates_to": request.message_id, "machine": self._machine}

    # ------------------------------------------------------------------ shared checks

    def _target_class(self, request: WsmanRequest, user: str, operation: Operation) -> str:
        """Canonical class (or `*`) named by the resource URI, after namespace and access checks."""
        parsed = parse_resource_uri(request.resource_uri or "")
        if parsed is None or parsed.namespace_path.lower() != self._namespace:
            # Unknown plugin URI or namespace: WBEM_E_INVALID_NAMESPACE surfaces as not found.
            raise Reject(soap_faults.resource_not_found(**self._where(request)))
        if not self._access.may_use_namespace(user):
            self._record_if_known((request.selector("PackageID") or "").upper(), operation, user, "access_denied")
            raise Reject(soap_faults.access_denied(**self._where(request), scope="service"))
        if parsed.class_name == "*":
            return "*"
        class_name = self._catalogue.canonical_class(parsed.class_name)
        if class_name is None:
            where = {"site_code": self._site, "machine": self._machine}
            raise invalid_class(request, **where, class_name=parsed.class_name, operation=operation)
        return class_name

    def _package_id(self, request: WsmanRequest, class_name: str) -> str:
        """The PackageID selector: the class's only key, so anything else is an invalid selector."""
        if class_name in ("*", BASE_CLASS) or self._catalogue.is_content_class(class_name):
            # Status classes are read by query; a Get of one of their rows is not modelled.
            raise Reject(soap_faults.resource_not_found(**self._where(request)))
        if not request.selectors:
            raise Reject(soap_faults.invalid_selectors(**self._where(request), detail_name="InsufficientSelectors"))
        if len(request.selectors) != 1 or request.selectors[0][0].lower() != "packageid":
            raise Reject(soap_faults.invalid_selectors(**self._where(request), detail_name="UnexpectedSelectors"))
        return request.selectors[0][1].upper()

    def _instance(
        self, request: WsmanRequest, class_name: str, package_id: str, operation: Operation, user: str
    ) -> dict[str, Value]:
        """The instance, or the not-found / access-denied fault WMI and RBAC would answer."""
        object_path = f'{class_name}.PackageID="{package_id}"'
        properties = self._catalogue.instance(class_name, package_id)
        return self._visible(request, properties, package_id, object_path=object_path, operation=operation, user=user)

    def _visible(
        self,
        request: WsmanRequest,
        properties: dict[str, Value] | None,
        package_id: str,
        *,
        object_path: str,
        operation: Operation,
        user: str,
    ) -> dict[str, Value]:
        """`properties`, or the not-found / access-denied fault WMI and RBAC would answer."""
        where = {**self._where(request), "site_code": self._site, "operation": WMI_OPERATION[operation]}
        if properties is None:
            self._record_if_known(package_id, operation, user, "not_found")
            raise Reject(error_replies.instance_not_found(**where, object_path=object_path))
        if self._access.is_denied(package_id):
            self._record(package_id, operation, user, "access_denied")
            raise Reject(error_replies.rbac_access_denied(**where, user=user, object_path=object_path))
        return properties

    # ------------------------------------------------------------------ operations

    def _get(self, request: WsmanRequest, user: str) -> bytes:
        self._log.count("gets")
        class_name = self._target_class(request, user, "get")
        if class_name == DISTRIBUTION_POINT_CLASS:
            package_id, properties = self._distribution_point(request, user, "get")
            self._record(package_id, "get", user, "ok")
            return soap.render_get_response(request.message_id, self._render_distribution_point(properties))
        package_id = self._package_id(request, class_name)
        properties = self._instance(request, class_name, package_id, "get", user)
        self._record(package_id, "get", user, "ok")
        instance_xml = render_instance(class_name, class_resource_uri(self._site, class_name), properties)
        return soap.render_get_response(request.message_id, instance_xml)

    def _invoke(self, request: WsmanRequest, user: str, method: str) -> bytes:
        self._log.count("invokes")
        class_name = self._target_class(request, user, "invoke")
        if method.lower() != REFRESH_METHOD.lower() or class_name in ("*", BASE_CLASS):
            object_path = f"{class_name}.PackageID={request.selector('PackageID') or ''}"
            raise Reject(
                error_replies.unknown_method(
                    **self._where(request), site_code=self._site, object_path=object_path, method=method
                )
            )
        package_id = self._package_id(request, class_name)
        if request.body_tag is not None and not request.body_tag.endswith(f"}}{REFRESH_METHOD}_INPUT"):
            message = f"The body of a {REFRESH_METHOD} request must be {REFRESH_METHOD}_INPUT. "
            raise Reject(soap_faults.schema_validation(**self._where(request), message=message))
        self._instance(request, class_name, package_id, "invoke", user)

        outcome = self._catalogue.refresh(package_id)
        accepted = outcome.result == "accepted"
        detail = "fault" if outcome.fault else outcome.return_value
        self._record(package_id, "invoke", user, "accepted" if accepted else f"{outcome.result}:{detail}", accepted)
        if outcome.fault:
            raise Reject(
                error_replies.medium_not_ready(
                    **self._where(request),
                    site_code=self._site,
                    object_path=f'{class_name}.PackageID="{package_id}"',
                    description=self._catalogue.medium_not_ready_description(package_id),
                    error_code=MEDIUM_NOT_READY_ERROR_CODE,
                )
            )
        class_uri = class_resource_uri(self._site, class_name)
        return soap.render_invoke_response(request.message_id, class_uri, REFRESH_METHOD, outcome.return_value)

    def _put(self, request: WsmanRequest, user: str) -> bytes:
        """WS-Transfer Put: only `SMS_DistributionPoint`, and only its `RefreshNow` trigger."""
        class_name = self._target_class(request, user, "put")
        if class_name != DISTRIBUTION_POINT_CLASS:
            raise Reject(soap_faults.action_not_supported(**self._where(request), action=request.action))
        package_id, properties = self._distribution_point(request, user, "put")
        if request.body_tag is None or not request.body_tag.endswith(f"}}{DISTRIBUTION_POINT_CLASS}"):
            message = (
                f"The body of a Put of {DISTRIBUTION_POINT_CLASS} must be an {DISTRIBUTION_POINT_CLASS} instance. "
            )
            raise Reject(soap_faults.schema_validation(**self._where(request), message=message))
        values = {name.lower(): value for name, value in request.body_properties}
        refresh = (values.get("refreshnow") or "false").strip().lower()
        if refresh not in ("true", "false", "1", "0"):
            message = "RefreshNow must be a boolean (true or false). "
            raise Reject(soap_faults.schema_validation(**self._where(request), message=message))
        if refresh in ("true", "1"):
            self._catalogue.refresh_now(package_id, str(properties["ServerNALPath"]))
        self._record(package_id, "put", user, "refresh_now" if refresh in ("true", "1") else "ok")
        return soap.render_put_response(request.message_id, self._render_distribution_point(properties))

    def _distribution_point(
        self, request: WsmanRequest, user: str, operation: Operation
    ) -> tuple[str, dict[str, Value]]:
        """The instance its three key selectors name (PackageID, ServerNALPath, SiteCode), after RBAC."""
        keys = {name.lower(): value for name, value in request.selectors}
        required = ("packageid", "servernalpath", "sitecode")
        if len(keys) != len(request.selectors) or set(keys) - set(required):
            raise Reject(soap_faults.invalid_selectors(**self._where(request), detail_name="UnexpectedSelectors"))
        if any(name not in keys for name in required):
            raise Reject(soap_faults.invalid_selectors(**self._where(request), detail_name="InsufficientSelectors"))
        package_id, nal_path, site_code = (keys[name] for name in required)
        package_id = package_id.upper()
        escaped_nal = nal_path.replace("\\", "\\\\").replace('"', '\\"')
        object_path = (
            f'{DISTRIBUTION_POINT_CLASS}.PackageID="{package_id}",ServerNALPath="{escaped_nal}",SiteCode="{site_code}"'
        )
        # The DP's own site (a child site's DP is listed by its source site's provider too).
        properties = self._catalogue.distribution_point(package_id, nal_path)
        if properties is not None and str(properties["SiteCode"]).upper() != site_code.upper():
            properties = None
        return package_id, self._visible(
            request, properties, package_id, object_path=object_path, operation=operation, user=user
        )

    def _render_distribution_point(self, properties: dict[str, Value]) -> str:
        class_uri = class_resource_uri(self._site, DISTRIBUTION_POINT_CLASS)
        names = self._catalogue.property_names(DISTRIBUTION_POINT_CLASS)
        return render_instance(DISTRIBUTION_POINT_CLASS, class_uri, properties, all_names=names)

    # ------------------------------------------------------------------ access and logging

    def _record(self, package_id: str, operation: Operation, user: str, result: str, accepted: bool = False) -> None:
        self._log.record(package_id, operation, user, result, accepted)

    def _record_if_known(self, package_id: str, operation: Operation, user: str, result: str) -> None:
        if package_id and self._catalogue.class_of(package_id) is not None:
            self._record(package_id, operation, user, result)
