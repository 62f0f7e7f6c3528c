"""Request ids per caller: what a caller names `deploy-42` is stored as `<token name>:deploy-42`.

Request ids are the workers' idempotency keys (a second request under an id that has its final
outcome is dropped), so one namespace for every caller would let one suppress another's
refreshes or read another's outcome under a shared id. Every id the API submits is the caller's
token name, a colon, then the caller's id (or one derived from its Idempotency-Key, or a new
one). Names hold no colon, so no caller can write an id in another's space. Ids from other
producers (Celery clients, bulk children) are left as they are.

A read looks for the caller's own id first, then for the id as given: `deploy-42` is the
caller's own, `team-a:deploy-42` anyone's who names it in full.
"""

from __future__ import annotations

from worker.domain.request import is_valid_id

__all__ = ["caller_request_id", "own_candidates"]


def caller_request_id(caller: str, local_id: str) -> str:
    """The stored id of the caller's `local_id` (the API bounds both so this fits the id rule)."""
    full = f"{caller}:{local_id}"
    if not is_valid_id(full):
        raise ValueError("the caller's request id does not fit the id rule")
    return full


def own_candidates(caller: str, request_id: str) -> list[str]:
    """The ids a read of `request_id` by `caller` looks up, in order: its own, then as given."""
    own = f"{caller}:{request_id}"
    return [own, request_id] if is_valid_id(own) else [request_id]
