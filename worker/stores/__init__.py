"""The Redis stores: every key the worker and its producers read or write, with its Lua.

    keys.py            every key and channel name (RedisKeys: one prefix per deployment)
    redis_client.py    the client: timeouts, health checks, a short retry on connection errors
    redis_full.py      a full Redis (maxmemory, noeviction): recognised, waited out, said once a minute
    lua.py             loading a script beside its module (*.lua, with lua_common.lua prepended)
    slots.py (+.lua)   the per-provider concurrency cap: leases, a fair waiting line; its layout
    coalesce.py (+.lua) one pending refresh per package: leader markers, followers
    fence.py           the invoke fence and the attempt lock (never refresh twice)
    bulk_store.py (+.lua) a bulk job's record, its paced children, exact counts
    bulk_outcomes.py   a bulk job's final outcome document
    outcome_writer.py (+.lua, bulk_outcome_writer.lua) one atomic write per outcome
    outcome_reader.py  the stream, the latest states, live subscriptions
    request_watch.py (+.lua) when each live request is next due (a lost message is sent again)
    follow_snapshots.py per-site shared reads of the packages followed to every DP
    redistribution_marks.py one RefreshNow per package and DP per window (opt-in redistribution)

The stores implement the use case's ports with its value types (worker/usecase/values.py).
"""

from worker.stores.bulk_outcomes import BulkOutcome
from worker.stores.bulk_store import BulkNotFoundError, BulkRecord, BulkStore, ChildSpec
from worker.stores.coalesce import Coalescer
from worker.stores.fence import RedisInvokeFences
from worker.stores.keys import BulkKeys, RedisKeys, SlotKeys
from worker.stores.outcome_reader import (
    OutcomeSubscription,
    PackageState,
    RequestState,
    final_stream_id,
    latest_state,
    read_events,
    read_stream,
    request_state,
    subscribe,
)
from worker.stores.outcome_writer import OutcomePublisher
from worker.stores.redis_client import redacted_url, redis_from_url
from worker.stores.request_watch import RequestWatch
from worker.stores.slots import (
    OCCUPANCY_READS,
    ProviderSlots,
    SlotOccupancy,
    estimate_retry_after_s,
    occupancy_from,
    queue_occupancy_reads,
)

__all__ = [
    "OCCUPANCY_READS",
    "BulkKeys",
    "BulkNotFoundError",
    "BulkOutcome",
    "BulkRecord",
    "BulkStore",
    "ChildSpec",
    "Coalescer",
    "OutcomePublisher",
    "OutcomeSubscription",
    "PackageState",
    "ProviderSlots",
    "RedisInvokeFences",
    "RedisKeys",
    "RequestState",
    "RequestWatch",
    "SlotKeys",
    "SlotOccupancy",
    "estimate_retry_after_s",
    "final_stream_id",
    "latest_state",
    "occupancy_from",
    "queue_occupancy_reads",
    "read_events",
    "read_stream",
    "redacted_url",
    "redis_from_url",
    "request_state",
    "subscribe",
]
