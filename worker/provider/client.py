"""The SMS Provider client: read a package, refresh it, enumerate with WQL, follow content to DPs.

Composition only: envelopes and parsing come from the pure `worker.wsman` layer, bytes travel
through `ProviderTransport`, short transport blips are retried in-call by the `in_call`
policy (resetting the session between tries). Every reply's `RelatesTo` is checked: pywinrm
does not, and a reply to someone else's request must never be taken as ours.

Each call takes an optional `deadline` (worker/domain/deadline.py): its socket waits are cut to what is
left of it, no retry starts that would not fit, and a call that finds it passed fails at once as
a `timeout` without sending anything.

The WS-Man layer's exceptions (a fault in a 200 reply, a malformed reply, a value no envelope
can carry) are turned into `RefreshError`s here, by `worker.provider.classify`: callers see nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import TypeVar

from config.settings import RetryPolicy
from errors import OperationTimeoutError
from worker.domain.deadline import Deadline
from worker.domain.distribution import (
    DEFAULT_MAX_ROWS,
    DISTRIBUTION_POINT_CLASS,
    ContentCountsReader,
    DpMessageReader,
    DpStatusBatch,
    DpStatusReader,
    SourceVersionReader,
    content_counts_query,
    distribution_point_uri,
    dp_message_query,
    dp_status_query,
    merge_batches,
    package_chunks,
    source_version_query,
    unsettled_dp_status_query,
    validate_nal_path,
)
from worker.domain.packages import (
    BOOT_IMAGE_CLASS,
    PackageInfo,
    package_resource_uri,
    site_enumeration_uri,
    validate_package_id,
    validate_site_code,
)
from worker.domain.refresh_answer import KNOWN_RETURN_VALUES
from worker.provider.classify import classify_exception, error_from_wsman
from worker.provider.transport import ProviderTransport
from worker.retry import in_call_retrying
from worker.wsman import (
    ACTION_PUT_RESPONSE,
    REFRESH_METHOD,
    EnumerationPage,
    Envelope,
    WmiInstance,
    WsmanError,
    build_enumerate,
    build_get,
    build_invoke,
    build_pull,
    build_put,
    build_release,
    check_action,
    check_relates_to,
    parse_enumeration,
    parse_header,
    parse_instance,
    parse_method_output,
)

__all__ = ["SccmClient"]

log = logging.getLogger(__name__)

_MAX_PULLS = 10_000  # bounds an enumeration against a provider that never ends its sequence
# A summarizer row is about 700 bytes on the wire: 500 a page keeps a reply near 350 KB, inside the
# 512,000-byte MaxEnvelopeSize with room for long NAL paths (200 packages x 10 DPs: 4 operations).
_STATUS_PAGE_SIZE = 500

T = TypeVar("T")


@contextlib.contextmanager
def _as_refresh_errors() -> Iterator[None]:
    """Raise the WS-Man layer's exceptions as the RefreshError they mean."""
    try:
        yield
    except WsmanError as exc:
        raise error_from_wsman(exc) from None


def _check_put_response(xml: bytes) -> None:
    check_action(parse_header(xml), ACTION_PUT_RESPONSE)


class SccmClient:
    """Operations on one site's SMS Provider."""

    def __init__(self, transport: ProviderTransport, site_code: str, in_call_policy: RetryPolicy) -> None:
        self.transport = transport
        self.site_code = site_code
        self.in_call_policy = in_call_policy

    def _exchange(
        self,
        build: Callable[[], Envelope],
        parse: Callable[[bytes], T],
        *,
        retry: bool = True,
        read_timeout_s: int | None = None,
        deadline: Deadline | None = None,
    ) -> T:
        """Send one request (fresh MessageID per try), check RelatesTo, parse; retry short blips."""

        def _once() -> T:
            timeout_s = None
            if deadline is not None:
                timeout_s = deadline.remaining_s()
                if timeout_s <= 0:
                    raise OperationTimeoutError("the attempt's time ran out before this WS-Man call could be sent")
            with _as_refresh_errors():
                envelope = build()
                reply = self.transport.send(envelope.xml, read_timeout_s=read_timeout_s, timeout_s=timeout_s)
                check_relates_to(parse_header(reply), envelope.message_id)
                return parse(reply)

        def _log_retry(exc: BaseException) -> None:
            log.info("retrying WS-Man call to site %s after %s", self.site_code, type(exc).__name__)

        if not retry:
            return _once()
        return in_call_retrying(self.in_call_policy, before_retry=_log_retry, deadline=deadline)(_once)

    @property
    def _to_url(self) -> str:
        return self.transport.provider.endpoint

    @property
    def _timeout_s(self) -> float:
        return float(self.transport.provider.operation_timeout_s)

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        with _as_refresh_errors():
            uri = package_resource_uri(self.site_code, package_class)

        def build() -> Envelope:
            return build_get(
                to_url=self._to_url,
                resource_uri=uri,
                selectors={"PackageID": package_id},
                operation_timeout_s=self._timeout_s,
            )

        instance = self._exchange(build, parse_instance, deadline=deadline)
        return PackageInfo.from_instance(instance)

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int:
        """Invoke RefreshPkgSource once; returns its ReturnValue (0 = accepted by the provider).

        Never retried here: a reply lost on the way back may hide a refresh that landed, so the
        caller looks at the package before trying again (worker/usecase/attempt.py, worker/stores/fence.py).
        A boot image's refresh rebuilds the image before it answers: it gets the provider's
        `boot_image_operation_timeout_s`, and a read timeout above it.
        """
        with _as_refresh_errors():
            uri = package_resource_uri(self.site_code, package_class)
        provider = self.transport.provider
        boot_image = package_class == BOOT_IMAGE_CLASS
        timeout_s = float(provider.boot_image_operation_timeout_s) if boot_image else self._timeout_s

        def build() -> Envelope:
            return build_invoke(
                to_url=self._to_url,
                resource_uri=uri,
                selectors={"PackageID": package_id},
                operation_timeout_s=timeout_s,
                method=REFRESH_METHOD,
            )

        output = self._exchange(
            build,
            lambda xml: parse_method_output(xml, REFRESH_METHOD),
            retry=False,
            read_timeout_s=provider.boot_image_read_timeout_s if boot_image else None,
            deadline=deadline,
        )
        if output.return_value not in KNOWN_RETURN_VALUES:
            # Microsoft documents only 0: an unknown value is reported as it is, never given a meaning.
            log.warning(
                "RefreshPkgSource of %s at site %s returned %d: an undocumented ReturnValue, read as a refusal",
                package_id,
                self.site_code,
                output.return_value,
            )
        return output.return_value

    def enumerate(
        self, wql: str, *, page_size: int = 100, deadline: Deadline | None = None
    ) -> Generator[WmiInstance, None, None]:
        """Instances matching a WQL query, page by page (Enumerate, then Pull until EndOfSequence).

        A caller that stops early (closes the generator, or a Pull fails) leaves a context open
        on the server: it is released with a WS-Enumeration Release, best effort. With a
        `deadline`, the whole enumeration ends by it (a Pull past it fails as a `timeout`).
        """
        with _as_refresh_errors():
            uri = site_enumeration_uri(self.site_code)

        def first() -> Envelope:
            return build_enumerate(
                to_url=self._to_url,
                resource_uri=uri,
                wql=wql,
                max_elements=page_size,
                operation_timeout_s=self._timeout_s,
            )

        def pull(context: str) -> Envelope:
            return build_pull(
                to_url=self._to_url,
                resource_uri=uri,
                context=context,
                max_elements=page_size,
                operation_timeout_s=self._timeout_s,
            )

        page: EnumerationPage = self._exchange(first, parse_enumeration, deadline=deadline)
        pulls = 0
        try:
            while True:
                yield from page.items
                if not page.has_more or page.context is None or pulls >= _MAX_PULLS:
                    return
                pulls += 1
                page = self._exchange(functools.partial(pull, page.context), parse_enumeration, deadline=deadline)
        finally:
            if page.has_more and page.context is not None:
                self._release(uri, page.context)

    # ------------------------------------------------------------------ distribution points

    def read_dp_status(
        self, package_ids: Iterable[str], *, max_rows: int = DEFAULT_MAX_ROWS, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        """Every DP row (`SMS_PackageStatusDistPointsSummarizer`) of these packages, a query per
        200 packages; rows the provider got wrong are refused and counted, and reading stops at
        `max_rows` (`truncated`), its enumeration released."""
        return self._read_status(package_ids, dp_status_query, DpStatusReader, max_rows, deadline)

    def read_unsettled_dp_status(
        self, settled_at: Mapping[str, int], *, max_rows: int = DEFAULT_MAX_ROWS, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        """The DP rows of these packages that are not installed at the given SourceVersion (or
        later), bounded like `read_dp_status`: a package whose every DP has it costs no rows."""
        with _as_refresh_errors():
            versions = {validate_package_id(pid): version for pid, version in settled_at.items()}
        return self._read_status(
            versions,
            lambda chunk: unsettled_dp_status_query({pid: versions[pid] for pid in chunk}),
            DpStatusReader,
            max_rows,
            deadline,
        )

    def read_dp_messages(
        self, package_ids: Iterable[str], *, max_rows: int = DEFAULT_MAX_ROWS, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        """The last status message per package x DP (`SMS_DistributionDPStatus`), bounded the same way."""
        return self._read_status(package_ids, dp_message_query, DpMessageReader, max_rows, deadline)

    def read_content_counts(
        self, package_ids: Iterable[str], *, max_rows: int = DEFAULT_MAX_ROWS, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        """Per package, DPs targeted / done / in progress / failed (`SMS_ObjectContentExtraInfo`): one
        row per package, so one operation reads 200 packages; blind to versions (see ContentCounts)."""
        return self._read_status(package_ids, content_counts_query, ContentCountsReader, max_rows, deadline)

    def read_source_versions(
        self, package_ids: Iterable[str], *, max_rows: int = DEFAULT_MAX_ROWS, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        """Each package's SourceVersion (`SMS_PackageBaseclass`), 200 packages a query (`versions`)."""
        return self._read_status(package_ids, source_version_query, SourceVersionReader, max_rows, deadline)

    def _read_status(
        self,
        package_ids: Iterable[str],
        query: Callable[[list[str]], str],
        reader_class: type[DpStatusReader | DpMessageReader | ContentCountsReader | SourceVersionReader],
        max_rows: int,
        deadline: Deadline | None,
    ) -> DpStatusBatch:
        with _as_refresh_errors():
            chunks = package_chunks(package_ids)
        batches: list[DpStatusBatch] = []
        left = max_rows
        for chunk in chunks:
            if left <= 0:
                batches.append(DpStatusBatch(truncated=True))
                break
            reader = reader_class(chunk, max_rows=left)
            instances = self.enumerate(query(chunk), page_size=_STATUS_PAGE_SIZE, deadline=deadline)
            try:
                for instance in instances:
                    if not reader.add(instance):
                        break
            finally:
                instances.close()  # an early stop releases the server's context
            batch = reader.result()
            left -= len(batch.rows) + len(batch.messages) + len(batch.counts) + len(batch.versions)
            batches.append(batch)
        merged = merge_batches(batches)
        if merged.rejected or merged.truncated:
            log.warning(
                "site %s: %d DP status rows refused, %d duplicates, truncated=%s (%s)",
                self.site_code,
                merged.rejected,
                merged.duplicates,
                merged.truncated,
                "; ".join(merged.problems),
            )
        return merged

    def refresh_now(
        self, package_id: str, nal_path: str, *, dp_site_code: str | None = None, deadline: Deadline | None = None
    ) -> None:
        """Set `RefreshNow = true` on the package's `SMS_DistributionPoint` at one DP (a WS-Transfer
        Put): ConfigMgr re-sends that package to that DP, the console's Redistribute.

        Never retried here: each landing re-sends the content; the caller bounds how often.
        """
        with _as_refresh_errors():
            uri = distribution_point_uri(self.site_code)
            selectors = {
                "PackageID": validate_package_id(package_id),
                "ServerNALPath": validate_nal_path(nal_path),
                "SiteCode": validate_site_code(dp_site_code or self.site_code),
            }

        def build() -> Envelope:
            return build_put(
                to_url=self._to_url,
                resource_uri=uri,
                selectors=selectors,
                class_name=DISTRIBUTION_POINT_CLASS,
                properties={"RefreshNow": "true"},
                operation_timeout_s=self._timeout_s,
            )

        self._exchange(build, _check_put_response, retry=False, deadline=deadline)

    def _release(self, uri: str, context: str) -> None:
        """Tell the server we are done with an enumeration context; a failure is only logged."""
        try:
            envelope = build_release(
                to_url=self._to_url, resource_uri=uri, context=context, operation_timeout_s=self._timeout_s
            )
            self.transport.send(envelope.xml)
        except Exception as exc:
            # Best effort: the server drops an idle context by itself (WinRM after its timeout).
            error = classify_exception(exc)
            log.debug(
                "WS-Man Release of an enumeration context at site %s failed: %s",
                self.site_code,
                error.message if error is not None else type(exc).__name__,
            )
