"""The SMS Provider behind WinRM's WMI plugin: one decrypted SOAP request in, one reply out.

Pure protocol core (no sockets): the HTTP server authenticates, decrypts and calls `handle`.
This module only dispatches; `soap` parses and renders, `catalogue` holds the packages and their
semantics, `faults` draws every fault, `wql` answers queries. One lock makes it thread-safe;
every call is short (no I/O, no sleeping).

Checks run in the order WinRM and WMI apply them: envelope, action, resource URI and namespace,
the caller's right to the namespace, class, method, selectors, instance, then RBAC on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from emulator import faults, soap
from emulator.catalogue import BASE_CLASS, MEDIUM_NOT_READY_ERROR_CODE, PROPERTY_NAMES, Catalogue
from emulator.namespaces import (
    ACTION_ENUMERATE,
    ACTION_GET,
    ACTION_PULL,
    ACTION_RELEASE,
    WQL_DIALECT,
    class_resource_uri,
    parse_resource_uri,
    sms_namespace_path,
)
from emulator.settings import EmulatorSettings
from emulator.soap import SoapError, WsmanRequest
from emulator.wql import Query, Value, WqlError, evaluate, parse, resolve

__all__ = ["ENUMERATION_CONTEXT_TTL_S", "MAX_ENUMERATION_ITEMS", "InjectedFault", "Provider", "WsmanReply"]

logger = logging.getLogger(__name__)

InjectedFault = Literal["timeout_fault", "quota_fault", "generic_failure"]
Operation = Literal["get", "invoke", "enumerate", "pull"]

REFRESH_METHOD: Final = "RefreshPkgSource"
ENUMERATION_CONTEXT_TTL_S: Final = 180.0  # idle enumerations are dropped, as WinRM does
MAX_ENUMERATION_CONTEXTS: Final = 1_000
# PackageIDs held by all open enumeration contexts together. Storing past either cap evicts the
# oldest contexts (their next Pull gets n:InvalidEnumerationContext, as an expired one does):
# abandoned enumerations cannot grow memory, and the one being served always fits.
MAX_ENUMERATION_ITEMS: Final = 1_000_000
MAX_EVENTS_PER_PACKAGE: Final = 100
_TOTAL_KEYS: Final = ("requests", "gets", "invokes", "accepted", "rejected", "enumerates", "pulls", "faults")
_OPERATION_BY_ACTION: Final[dict[str, Operation]] = {
    ACTION_GET: "get",
    ACTION_ENUMERATE: "enumerate",
    ACTION_PULL: "pull",
}
_WMI_OPERATION: Final[dict[Operation, str]] = {
    "get": "GetObject",
    "invoke": "ExecMethod",
    "enumerate": "ExecQuery",
    "pull": "ExecQuery",
}


@dataclass(frozen=True, slots=True)
class WsmanReply:
    status: int  # 200, or 500 with a SOAP fault, as WinRM does
    body: bytes  # UTF-8 SOAP envelope


class _Reject(Exception):  # noqa: N818 - control flow, not an error: carries the fault reply
    """Raised inside dispatch to answer with a fault at once."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body


@dataclass(slots=True)
class _Enumeration:
    # Matches of the query at Enumerate; each is rendered from its current state when a page is
    # served, so a context costs a pointer per package, not a copy of every instance.
    package_ids: tuple[str, ...]
    selected: tuple[str, ...] | None
    position: int
    expires_at: float


@dataclass(slots=True)
class _PackageLog:
    gets: int = 0
    invokes: int = 0
    accepted: int = 0
    rejected: int = 0
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS_PER_PACKAGE))

    def as_dict(self) -> dict[str, Any]:
        return {
            "gets": self.gets,
            "invokes": self.invokes,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "events": list(self.events),
        }


def _account(user: str) -> tuple[str | None, str]:
    """(domain, name), lower-cased, from `DOMAIN\\name`, `name@domain.fqdn` or `name`."""
    user = user.strip()
    if "\\" in user:
        domain, name = user.split("\\", 1)
    elif "@" in user:
        name, domain = user.split("@", 1)
        domain = domain.split(".", 1)[0]
    else:
        domain, name = "", user
    return (domain.lower() or None), name.lower()


class Provider:
    """Answers Get / Invoke RefreshPkgSource / Enumerate / Pull / Release for one emulated site."""

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
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._catalogue = Catalogue(settings, clock=clock, wall_clock=wall_clock)
        self._site = settings.site_code.upper()
        self._namespace = sms_namespace_path(self._site).lower()
        self._machine = settings.machine
        self._account = _account(settings.username)
        if any(self._is_configured_user(user) for user in settings.denied_users):
            raise ValueError("EmulatorSettings.denied_users cannot name the configured username")
        self._denied: set[str] = set()
        self._enumerations: OrderedDict[str, _Enumeration] = OrderedDict()
        self._enumeration_items = 0  # len(package_ids) summed over self._enumerations
        self._max_enumeration_items = max_enumeration_items
        self._package_logs: dict[str, _PackageLog] = {}
        self._totals: Counter[str] = Counter()

    # ------------------------------------------------------------------ entry points

    def handle(self, envelope: bytes, *, user: str) -> WsmanReply:
        """Answer one decrypted SOAP request; `user` is the account the server authenticated."""
        with self._lock:
            self._totals["requests"] += 1
            try:
                reply = WsmanReply(200, self._dispatch(envelope, user))
            except _Reject as rejection:
                reply = WsmanReply(500, rejection.body)
            except Exception:
                # A bug here must look like a failing WMI provider to the client, never take the
                # server down: WinRM answers a plugin failure with a fault, and so do we.
                logger.exception("emulator provider failed on a request")
                reply = WsmanReply(500, faults.internal_error(relates_to=None, machine=self._machine))
            if reply.status != 200:
                self._totals["faults"] += 1
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
            operation = "invoke" if request is None else _OPERATION_BY_ACTION.get(request.action, "invoke")
            package_id = (request.selector("PackageID") or "").upper() if request else ""
            where: dict[str, Any] = {"relates_to": relates_to, "machine": self._machine}
            if kind == "timeout_fault":
                body = faults.timed_out(**where)
            elif kind == "quota_fault":
                # WinRM refuses over-quota requests before reading them: both captured quota faults
                # (tests/fixtures/windows/*quota*.xml) carry no RelatesTo.
                limit = self._settings.max_concurrent_operations_per_user
                body = faults.quota_exceeded(relates_to=None, machine=self._machine, limit=limit)
            else:
                body = faults.site_database_failure(
                    **where,
                    site_code=self._site,
                    operation=_WMI_OPERATION[operation],
                    object_path=f'PackageID="{package_id}"' if package_id else "",
                )
            self._totals["requests"] += 1
            self._totals["faults"] += 1
            self._record_if_known(package_id, operation, "", f"injected:{kind}")
            return WsmanReply(500, body)

    # ------------------------------------------------------------------ control and observation

    def set_medium_ready(self, package_id: str | None = None, ready: bool = True) -> list[str]:
        """Make one (or, with None, every) STORAGE_COMPRESS package's medium ready / not ready."""
        with self._lock:
            return self._catalogue.set_medium_ready(package_id, ready)

    def deny_access(self, package_id: str) -> None:
        """RBAC: the configured account may no longer read or refresh this package."""
        with self._lock:
            self._denied.add(package_id.upper())

    def allow_access(self, package_id: str) -> None:
        with self._lock:
            self._denied.discard(package_id.upper())

    def package(self, package_id: str) -> dict[str, Any] | None:
        """Current properties (JSON-ready), plus `_`-prefixed emulator state."""
        with self._lock:
            view = self._catalogue.snapshot(package_id)
            if view is not None:
                view["_access_denied"] = view["PackageID"] in self._denied
            return view

    def packages(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._catalogue.summaries()

    def call_log(self) -> dict[str, Any]:
        with self._lock:
            return {
                "packages": {package_id: log.as_dict() for package_id, log in self._package_logs.items()},
                "totals": {key: self._totals[key] for key in _TOTAL_KEYS},
            }

    def open_enumerations(self) -> dict[str, int]:
        """Open enumeration contexts and the PackageIDs they hold (the latter capped, see MAX_ENUMERATION_ITEMS)."""
        with self._lock:
            return {"contexts": len(self._enumerations), "package_ids": self._enumeration_items}

    def reset_log(self) -> None:
        with self._lock:
            self._package_logs.clear()
            self._totals.clear()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, envelope: bytes, user: str) -> bytes:
        try:
            request = soap.parse_request(envelope)
        except SoapError as exc:
            where: dict[str, Any] = {"relates_to": exc.message_id, "machine": self._machine}
            if exc.kind == "missing_header":
                header = "Action" if exc.message_id else "MessageID"
                raise _Reject(faults.message_header_required(**where, header=header)) from None
            raise _Reject(faults.schema_validation(**where, message=str(exc))) from None

        action = request.action
        if action == ACTION_GET:
            return self._get(request, user)
        if action == ACTION_ENUMERATE:
            return self._enumerate(request, user)
        if action == ACTION_PULL:
            return self._pull(request)
        if action == ACTION_RELEASE:
            return self._release(request)
        # [MS-WSMV] 3.1.4.1.27: a custom action is the resource URI followed by the method name.
        resource_uri = (request.resource_uri or "").rstrip("/")
        if resource_uri and action.lower().startswith(resource_uri.lower() + "/"):
            return self._invoke(request, user, action[len(resource_uri) + 1 :])
        raise _Reject(faults.action_not_supported(**self._where(request), action=action))

    def _where(self, request: WsmanRequest) -> dict[str, Any]:
        """The arguments every fault builder takes."""
        return {"relates_to": request.message_id, "machine": self._machine}

    # ------------------------------------------------------------------ shared checks

    def _target_class(self, request: WsmanRequest, user: str, operation: Operation) -> str:
        """Canonical class (or `*`) named by the resource URI, after namespace and access checks."""
        parsed = parse_resource_uri(request.resource_uri or "")
        if parsed is None or parsed.namespace_path.lower() != self._namespace:
            # Unknown plugin URI or namespace: WBEM_E_INVALID_NAMESPACE surfaces as not found.
            raise _Reject(faults.resource_not_found(**self._where(request)))
        if not self._is_configured_user(user):
            self._record_if_known((request.selector("PackageID") or "").upper(), operation, user, "access_denied")
            raise _Reject(faults.access_denied(**self._where(request), scope="service"))
        if parsed.class_name == "*":
            return "*"
        class_name = self._catalogue.canonical_class(parsed.class_name)
        if class_name is None:
            raise self._invalid_class(request, parsed.class_name, operation)
        return class_name

    def _invalid_class(self, request: WsmanRequest, class_name: str, operation: Operation) -> _Reject:
        return _Reject(
            faults.invalid_class(
                **self._where(request),
                site_code=self._site,
                class_name=class_name,
                operation=_WMI_OPERATION[operation],
                query=request.filter_text,
            )
        )

    def _package_id(self, request: WsmanRequest, class_name: str) -> str:
        """The PackageID selector: the class's only key, so anything else is an invalid selector."""
        if class_name in ("*", BASE_CLASS):
            raise _Reject(faults.resource_not_found(**self._where(request)))
        if not request.selectors:
            raise _Reject(faults.invalid_selectors(**self._where(request), detail_name="InsufficientSelectors"))
        if len(request.selectors) != 1 or request.selectors[0][0].lower() != "packageid":
            raise _Reject(faults.invalid_selectors(**self._where(request), detail_name="UnexpectedSelectors"))
        return request.selectors[0][1].upper()

    def _instance(
        self, request: WsmanRequest, class_name: str, package_id: str, operation: Operation, user: str
    ) -> dict[str, Value]:
        """The instance, or the not-found / access-denied fault WMI and RBAC would answer."""
        where = {**self._where(request), "site_code": self._site, "operation": _WMI_OPERATION[operation]}
        object_path = f'{class_name}.PackageID="{package_id}"'
        properties = self._catalogue.instance(class_name, package_id)
        if properties is None:
            self._record_if_known(package_id, operation, user, "not_found")
            raise _Reject(faults.instance_not_found(**where, object_path=object_path))
        if package_id in self._denied:
            self._record(package_id, operation, user, "access_denied")
            raise _Reject(faults.rbac_access_denied(**where, user=user, object_path=object_path))
        return properties

    # ------------------------------------------------------------------ operations

    def _get(self, request: WsmanRequest, user: str) -> bytes:
        self._totals["gets"] += 1
        class_name = self._target_class(request, user, "get")
        package_id = self._package_id(request, class_name)
        properties = self._instance(request, class_name, package_id, "get", user)
        self._record(package_id, "get", user, "ok")
        instance_xml = soap.render_instance(class_name, class_resource_uri(self._site, class_name), properties)
        return soap.render_get_response(request.message_id, instance_xml)

    def _invoke(self, request: WsmanRequest, user: str, method: str) -> bytes:
        self._totals["invokes"] += 1
        class_name = self._target_class(request, user, "invoke")
        if method.lower() != REFRESH_METHOD.lower() or class_name in ("*", BASE_CLASS):
            object_path = f"{class_name}.PackageID={request.selector('PackageID') or ''}"
            raise _Reject(
                faults.unknown_method(
                    **self._where(request), site_code=self._site, object_path=object_path, method=method
                )
            )
        package_id = self._package_id(request, class_name)
        if request.body_tag is not None and not request.body_tag.endswith(f"}}{REFRESH_METHOD}_INPUT"):
            message = f"The body of a {REFRESH_METHOD} request must be {REFRESH_METHOD}_INPUT. "
            raise _Reject(faults.schema_validation(**self._where(request), message=message))
        self._instance(request, class_name, package_id, "invoke", user)

        outcome = self._catalogue.refresh(package_id)
        accepted = outcome.result == "accepted"
        detail = "fault" if outcome.fault else outcome.return_value
        self._record(package_id, "invoke", user, "accepted" if accepted else f"{outcome.result}:{detail}", accepted)
        if outcome.fault:
            raise _Reject(
                faults.medium_not_ready(
                    **self._where(request),
                    site_code=self._site,
                    object_path=f'{class_name}.PackageID="{package_id}"',
                    description=self._catalogue.medium_not_ready_description(package_id),
                    error_code=MEDIUM_NOT_READY_ERROR_CODE,
                )
            )
        class_uri = class_resource_uri(self._site, class_name)
        return soap.render_invoke_response(request.message_id, class_uri, REFRESH_METHOD, outcome.return_value)

    def _query(self, request: WsmanRequest, target: str) -> Query:
        """The query an Enumerate asks for: its WQL filter, or every instance of the URI's class."""
        text = request.filter_text
        if text is None:
            if target == "*":
                raise self._invalid_query(request, "A WQL filter is required to enumerate the * resource URI. ")
            return Query(class_name=target, properties=None, where=None)
        dialect = request.filter_dialect
        if dialect is not None and dialect.lower() != WQL_DIALECT.lower():
            raise _Reject(faults.filter_dialect_unavailable(**self._where(request), dialect=dialect))
        try:
            query = parse(text)
            class_name = self._catalogue.canonical_class(query.class_name)
            if class_name is None:
                raise self._invalid_class(request, query.class_name, "enumerate")
            if target not in ("*", class_name):
                raise self._invalid_query(request, f"The query must select from {target}. ")
            return resolve(query, class_name, PROPERTY_NAMES)
        except WqlError as exc:
            raise self._invalid_query(request, f"The query is not valid: {exc}. ") from None

    def _invalid_query(self, request: WsmanRequest, message: str) -> _Reject:
        return _Reject(
            faults.invalid_query(
                **self._where(request), site_code=self._site, message=message, query=request.filter_text or ""
            )
        )

    def _enumerate(self, request: WsmanRequest, user: str) -> bytes:
        self._totals["enumerates"] += 1
        query = self._query(request, self._target_class(request, user, "enumerate"))
        # RBAC filters query results silently: the SMS Provider only returns what you may see.
        package_ids = tuple(
            str(properties["PackageID"])
            for _own_class, properties in self._catalogue.instances(query.class_name)
            if properties["PackageID"] not in self._denied and evaluate(query.where, properties)
        )
        context = soap.new_message_id()
        state = _Enumeration(package_ids, query.properties, 0, self._clock() + ENUMERATION_CONTEXT_TTL_S)
        if not request.optimize:
            self._store_enumeration(context, state)
            return soap.render_enumerate_response(request.message_id, context, (), optimized=False, end=False)
        page = self._next_page(state, request.max_elements or 1, "enumerate", user)
        end = state.position >= len(state.package_ids)
        if not end:
            self._store_enumeration(context, state)
        return soap.render_enumerate_response(request.message_id, context, page, optimized=True, end=end)

    def _pull(self, request: WsmanRequest) -> bytes:
        self._totals["pulls"] += 1
        context = request.enumeration_context or ""
        state = self._take_enumeration(context)
        if state is None:
            raise _Reject(faults.invalid_enumeration_context(**self._where(request)))
        page = self._next_page(state, request.max_elements or 1, "pull", "")
        end = state.position >= len(state.package_ids)
        if not end:
            state.expires_at = self._clock() + ENUMERATION_CONTEXT_TTL_S
            self._store_enumeration(context, state)
        return soap.render_pull_response(request.message_id, context, page, end=end)

    def _release(self, request: WsmanRequest) -> bytes:
        if self._take_enumeration(request.enumeration_context or "") is None:
            raise _Reject(faults.invalid_enumeration_context(**self._where(request)))
        return soap.render_release_response(request.message_id)

    # ------------------------------------------------------------------ enumeration contexts

    def _next_page(self, state: _Enumeration, size: int, operation: Operation, user: str) -> list[str]:
        page = state.package_ids[state.position : state.position + size]
        state.position += len(page)
        rendered = []
        for package_id in page:
            own_class = self._catalogue.class_of(package_id)
            properties = None if own_class is None else self._catalogue.instance(own_class, package_id)
            if own_class is None or properties is None:
                continue  # gone since Enumerate (the catalogue never deletes today)
            self._record(package_id, operation, user, "returned")
            class_uri = class_resource_uri(self._site, own_class)
            rendered.append(soap.render_instance(own_class, class_uri, properties, state.selected))
        return rendered

    def _store_enumeration(self, context: str, state: _Enumeration) -> None:
        self._drop_expired_enumerations()
        self._enumerations[context] = state
        self._enumeration_items += len(state.package_ids)
        while len(self._enumerations) > 1 and (
            len(self._enumerations) > MAX_ENUMERATION_CONTEXTS or self._enumeration_items > self._max_enumeration_items
        ):
            _oldest_context, oldest = self._enumerations.popitem(last=False)
            self._enumeration_items -= len(oldest.package_ids)

    def _take_enumeration(self, context: str) -> _Enumeration | None:
        """Remove and return a live context (expired ones are dropped on the way)."""
        self._drop_expired_enumerations()
        state = self._enumerations.pop(context, None)
        if state is not None:
            self._enumeration_items -= len(state.package_ids)
        return state

    def _drop_expired_enumerations(self) -> None:
        now = self._clock()
        for stale in [key for key, state in self._enumerations.items() if state.expires_at <= now]:
            self._enumeration_items -= len(self._enumerations.pop(stale).package_ids)

    # ------------------------------------------------------------------ access and logging

    def _is_configured_user(self, user: str) -> bool:
        domain, name = _account(user)
        expected_domain, expected_name = self._account
        return name == expected_name and (domain is None or expected_domain is None or domain == expected_domain)

    def _record(self, package_id: str, operation: Operation, user: str, result: str, accepted: bool = False) -> None:
        log = self._package_logs.setdefault(package_id, _PackageLog())
        if operation == "get":
            log.gets += 1
        elif operation == "invoke":
            log.invokes += 1
            outcome = "accepted" if accepted else "rejected"
            setattr(log, outcome, getattr(log, outcome) + 1)
            self._totals[outcome] += 1
        log.events.append({"op": operation, "at": self._wall_clock(), "user": user, "result": result})

    def _record_if_known(self, package_id: str, operation: Operation, user: str, result: str) -> None:
        if package_id and self._catalogue.class_of(package_id) is not None:
            self._record(package_id, operation, user, result)
