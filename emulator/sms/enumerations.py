"""WS-Enumeration over WQL: Enumerate, Pull and Release, and the open contexts between them.

`WqlEnumerations` answers the three operations once the provider has checked the resource URI
and the caller's access: the WQL filter (or the URI's class) selects the instances, RBAC
silently drops the ones the caller may not see, and pages are rendered as they are served.

A context holds the keys of the instances that matched at Enumerate (a PackageID, or a content
status row's key: emulator.sms.content_status), each rendered from its current state when its
page is served, so a context costs a pointer per instance, not a copy of every instance.
Idle contexts expire after ENUMERATION_CONTEXT_TTL_S, as WinRM drops them.
Storing past MAX_ENUMERATION_CONTEXTS contexts or `max_items` PackageIDs in total evicts the
oldest contexts (their next Pull gets n:InvalidEnumerationContext, as an expired one does):
abandoned enumerations cannot grow memory, and the one being served always fits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from emulator.sms import error_replies
from emulator.sms.access import AccessRules
from emulator.sms.calllog import CallLog
from emulator.sms.catalogue import Catalogue, InstanceKey
from emulator.sms.instance_xml import render_instance
from emulator.sms.packages import BASE_CLASS
from emulator.sms.wql import Query, WqlError, parse, resolve
from emulator.wsman import (
    WMI_OPERATION,
    WQL_DIALECT,
    Operation,
    Reject,
    WsmanRequest,
    class_resource_uri,
    soap,
    soap_faults,
)

__all__ = [
    "ENUMERATION_CONTEXT_TTL_S",
    "MAX_ENUMERATION_CONTEXTS",
    "MAX_ENUMERATION_ITEMS",
    "Enumeration",
    "EnumerationStore",
    "WqlEnumerations",
    "invalid_class",
]

ENUMERATION_CONTEXT_TTL_S: Final = 180.0
MAX_ENUMERATION_CONTEXTS: Final = 1_000
MAX_ENUMERATION_ITEMS: Final = 1_000_000


@dataclass(slots=True)
class Enumeration:
    """One open enumeration: the class, the matches, the selected properties and how far it has got."""

    package_ids: tuple[InstanceKey, ...]
    selected: tuple[str, ...] | None
    position: int = 0
    class_name: str = BASE_CLASS

    @property
    def done(self) -> bool:
        return self.position >= len(self.package_ids)

    def next_page(self, size: int) -> tuple[InstanceKey, ...]:
        page = self.package_ids[self.position : self.position + size]
        self.position += len(page)
        return page


class EnumerationStore:
    """Contexts by id, oldest first. Not thread-safe: the Provider locks."""

    def __init__(self, *, clock: Callable[[], float], max_items: int = MAX_ENUMERATION_ITEMS) -> None:
        self._clock = clock
        self._max_items = max_items
        # context -> (expiry, state). Every store puts its context last with expiry now + TTL,
        # so the order is also expiry order: expired contexts are always at the front.
        self._contexts: OrderedDict[str, tuple[float, Enumeration]] = OrderedDict()
        self._items = 0  # len(package_ids) summed over the contexts

    def store(self, context: str, state: Enumeration) -> None:
        """Keep (or keep again, after a Pull) a context for another ENUMERATION_CONTEXT_TTL_S."""
        self._drop_expired()
        self._contexts[context] = (self._clock() + ENUMERATION_CONTEXT_TTL_S, state)
        self._items += len(state.package_ids)
        while len(self._contexts) > 1 and (
            len(self._contexts) > MAX_ENUMERATION_CONTEXTS or self._items > self._max_items
        ):
            _oldest_context, (_expiry, oldest) = self._contexts.popitem(last=False)
            self._items -= len(oldest.package_ids)

    def take(self, context: str) -> Enumeration | None:
        """Remove and return a live context (None when unknown, expired or evicted)."""
        self._drop_expired()
        entry = self._contexts.pop(context, None)
        if entry is None:
            return None
        self._items -= len(entry[1].package_ids)
        return entry[1]

    def counts(self) -> dict[str, int]:
        """Open contexts and the PackageIDs they hold."""
        self._drop_expired()
        return {"contexts": len(self._contexts), "package_ids": self._items}

    def _drop_expired(self) -> None:
        now = self._clock()
        while self._contexts:
            context, (expiry, state) = next(iter(self._contexts.items()))
            if expiry > now:
                return
            del self._contexts[context]
            self._items -= len(state.package_ids)


def invalid_class(
    request: WsmanRequest, *, site_code: str, machine: str, class_name: str, operation: Operation
) -> Reject:
    """The fault for a class the namespace does not have (in a URI or a query)."""
    return Reject(
        error_replies.invalid_class(
            relates_to=request.message_id,
            machine=machine,
            site_code=site_code,
            class_name=class_name,
            operation=WMI_OPERATION[operation],
            query=request.filter_text,
        )
    )


class WqlEnumerations:
    """Enumerate / Pull / Release for one site. Not thread-safe: the Provider locks."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        access: AccessRules,
        log: CallLog,
        site_code: str,
        machine: str,
        clock: Callable[[], float],
        max_items: int = MAX_ENUMERATION_ITEMS,
    ) -> None:
        self._catalogue = catalogue
        self._access = access
        self._log = log
        self._site = site_code
        self._machine = machine
        self.store = EnumerationStore(clock=clock, max_items=max_items)

    def enumerate(self, request: WsmanRequest, target: str, user: str) -> bytes:
        """Enumerate `target` (a canonical class, or `*` with a WQL filter naming one)."""
        query = self._query(request, target)
        # RBAC filters query results silently: the SMS Provider only returns what you may see.
        matches = self._catalogue.matching(query.class_name, query.where)
        visible = tuple(key for key in matches if not self._access.is_denied(key if isinstance(key, str) else key[0]))
        state = Enumeration(visible, query.properties, class_name=query.class_name)
        context = soap.new_message_id()
        if not request.optimize:
            self.store.store(context, state)
            return soap.render_enumerate_response(request.message_id, context, (), optimized=False, end=False)
        page = self._render_page(state, request.max_elements or 1, "enumerate", user)
        if not state.done:
            self.store.store(context, state)
        return soap.render_enumerate_response(request.message_id, context, page, optimized=True, end=state.done)

    def pull(self, request: WsmanRequest) -> bytes:
        context = request.enumeration_context or ""
        state = self.store.take(context)
        if state is None:
            raise Reject(soap_faults.invalid_enumeration_context(**self._where(request)))
        page = self._render_page(state, request.max_elements or 1, "pull", "")
        if not state.done:
            self.store.store(context, state)
        return soap.render_pull_response(request.message_id, context, page, end=state.done)

    def release(self, request: WsmanRequest) -> bytes:
        if self.store.take(request.enumeration_context or "") is None:
            raise Reject(soap_faults.invalid_enumeration_context(**self._where(request)))
        return soap.render_release_response(request.message_id)

    def _where(self, request: WsmanRequest) -> dict[str, Any]:
        return {"relates_to": request.message_id, "machine": self._machine}

    def _query(self, request: WsmanRequest, target: str) -> Query:
        """The query an Enumerate asks for: its WQL filter, or every instance of the URI's class."""
        text = request.filter_text
        if text is None:
            if target == "*":
                raise self._invalid_query(request, "A WQL filter is required to enumerate the * resource URI. ")
            return Query(class_name=target, properties=None, where=None)
        dialect = request.filter_dialect
        if dialect is not None and dialect.lower() != WQL_DIALECT.lower():
            raise Reject(soap_faults.filter_dialect_unavailable(**self._where(request), dialect=dialect))
        try:
            query = parse(text)
            class_name = self._catalogue.canonical_class(query.class_name)
            if class_name is None:
                where = {"site_code": self._site, "machine": self._machine}
                raise invalid_class(request, **where, class_name=query.class_name, operation="enumerate")
            if target not in ("*", class_name):
                raise self._invalid_query(request, f"The query must select from {target}. ")
            return resolve(query, class_name, self._catalogue.property_names(class_name))
        except WqlError as exc:
            raise self._invalid_query(request, f"The query is not valid: {exc}. ") from None

    def _invalid_query(self, request: WsmanRequest, message: str) -> Reject:
        return Reject(
            error_replies.invalid_query(
                **self._where(request), site_code=self._site, message=message, query=request.filter_text or ""
            )
        )

    def _render_page(self, state: Enumeration, size: int, operation: Operation, user: str) -> list[str]:
        rendered = []
        content = self._catalogue.is_content_class(state.class_name)
        names = self._catalogue.property_names(state.class_name)
        # An instance gone since Enumerate (a job completed) is skipped.
        for own_class, properties in self._catalogue.render(state.class_name, state.next_page(size)):
            if not content:  # the call log is per package: status rows are counted, not logged
                self._log.record(str(properties["PackageID"]), operation, user, "returned")
            class_uri = class_resource_uri(self._site, own_class)
            rendered.append(render_instance(own_class, class_uri, properties, state.selected, all_names=names))
        return rendered
