"""The SMS Provider client: read a package, refresh it, enumerate with WQL.

Composition only: envelopes and parsing come from the pure `worker.wsman` layer, bytes travel
through `ProviderTransport`, short transport blips are retried in-call by the `in_call`
policy (resetting the session between tries). Every reply's `RelatesTo` is checked: pywinrm
does not, and a reply to someone else's request must never be taken as ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

from config.settings import RetryPolicy
from worker.packages import PackageInfo, package_resource_uri, site_enumeration_uri
from worker.retry import in_call_retrying
from worker.transport import ProviderTransport
from worker.wsman import (
    REFRESH_METHOD,
    EnumerationPage,
    Envelope,
    WmiInstance,
    build_enumerate,
    build_get,
    build_invoke,
    build_pull,
    check_relates_to,
    parse_enumeration,
    parse_header,
    parse_instance,
    parse_method_output,
)

__all__ = ["SccmClient"]

log = logging.getLogger(__name__)

_MAX_PULLS = 10_000  # bounds an enumeration against a provider that never ends its sequence

T = TypeVar("T")


class SccmClient:
    """Operations on one site's SMS Provider."""

    def __init__(self, transport: ProviderTransport, site_code: str, in_call_policy: RetryPolicy) -> None:
        self.transport = transport
        self.site_code = site_code
        self.in_call_policy = in_call_policy
        self.round_trips = 0

    def _exchange(self, build: Callable[[], Envelope], parse: Callable[[bytes], T]) -> T:
        """Send one request (fresh MessageID per try), check RelatesTo, parse; retry short blips."""

        def _once() -> T:
            envelope = build()
            self.round_trips += 1
            reply = self.transport.send(envelope.xml)
            check_relates_to(parse_header(reply), envelope.message_id)
            return parse(reply)

        def _log_retry(exc: BaseException) -> None:
            log.info("retrying WS-Man call to site %s after %s", self.site_code, type(exc).__name__)

        return in_call_retrying(self.in_call_policy, before_retry=_log_retry)(_once)

    @property
    def _to_url(self) -> str:
        return self.transport.provider.endpoint

    @property
    def _timeout_s(self) -> float:
        return float(self.transport.provider.operation_timeout_s)

    def get_package(self, package_class: str, package_id: str) -> PackageInfo:
        uri = package_resource_uri(self.site_code, package_class)

        def build() -> Envelope:
            return build_get(
                to_url=self._to_url,
                resource_uri=uri,
                selectors={"PackageID": package_id},
                operation_timeout_s=self._timeout_s,
            )

        instance = self._exchange(build, parse_instance)
        return PackageInfo.from_instance(instance)

    def refresh(self, package_class: str, package_id: str) -> int:
        """Invoke RefreshPkgSource; returns its ReturnValue (0 = accepted by the provider)."""
        uri = package_resource_uri(self.site_code, package_class)

        def build() -> Envelope:
            return build_invoke(
                to_url=self._to_url,
                resource_uri=uri,
                selectors={"PackageID": package_id},
                operation_timeout_s=self._timeout_s,
                method=REFRESH_METHOD,
            )

        output = self._exchange(build, lambda xml: parse_method_output(xml, REFRESH_METHOD))
        return output.return_value

    def enumerate(self, wql: str, *, page_size: int = 100) -> Iterator[WmiInstance]:
        """Instances matching a WQL query, page by page (Enumerate, then Pull until EndOfSequence)."""
        uri = site_enumeration_uri(self.site_code)

        def first() -> Envelope:
            return build_enumerate(
                to_url=self._to_url,
                resource_uri=uri,
                wql=wql,
                max_elements=page_size,
                operation_timeout_s=self._timeout_s,
            )

        page: EnumerationPage = self._exchange(first, parse_enumeration)
        yield from page.items
        for _ in range(_MAX_PULLS):
            if page.end_of_sequence or not page.context:
                return
            context = page.context

            def pull(context: str = context) -> Envelope:
                return build_pull(
                    to_url=self._to_url,
                    resource_uri=uri,
                    context=context,
                    max_elements=page_size,
                    operation_timeout_s=self._timeout_s,
                )

            page = self._exchange(pull, parse_enumeration)
            yield from page.items
