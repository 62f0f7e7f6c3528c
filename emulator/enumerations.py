"""Open WS-Enumeration contexts: what each one still has to return, bounded in count and size.

A context holds the PackageIDs that matched at Enumerate (each instance is rendered from its
current state when its page is served), so a context costs a pointer per package, not a copy of
every instance. Idle contexts expire after ENUMERATION_CONTEXT_TTL_S, as WinRM drops them.
Storing past MAX_ENUMERATION_CONTEXTS contexts or `max_items` PackageIDs in total evicts the
oldest contexts (their next Pull gets n:InvalidEnumerationContext, as an expired one does):
abandoned enumerations cannot grow memory, and the one being served always fits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ENUMERATION_CONTEXT_TTL_S",
    "MAX_ENUMERATION_CONTEXTS",
    "MAX_ENUMERATION_ITEMS",
    "Enumeration",
    "EnumerationStore",
]

ENUMERATION_CONTEXT_TTL_S: Final = 180.0
MAX_ENUMERATION_CONTEXTS: Final = 1_000
MAX_ENUMERATION_ITEMS: Final = 1_000_000


@dataclass(slots=True)
class Enumeration:
    """One open enumeration: the matches, the selected properties and how far it has got."""

    package_ids: tuple[str, ...]
    selected: tuple[str, ...] | None
    position: int = 0

    @property
    def done(self) -> bool:
        return self.position >= len(self.package_ids)

    def next_page(self, size: int) -> tuple[str, ...]:
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
