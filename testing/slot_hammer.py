"""A process that hammers one site's concurrency cap, for the cross-process cap test.

    python -m testing.slot_hammer --redis-url URL --prefix P --site PS1 --limit 3 --cycles 20 --name h1

Each cycle: poll `try_acquire` until granted, then, while holding, INCR a shared probe counter
in Redis (its value is how many holders exist at that moment, across all processes), do a few
round trips, DECR it and release. Prints one JSON line: grants, releases, the highest probe
value seen and how many times it exceeded the limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Final

from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url
from worker.stores.slots import PRIORITY_BULK, PRIORITY_SINGLE, Granted, ProviderSlots

__all__ = ["PROBE_SUFFIX", "main"]

PROBE_SUFFIX: Final = ":test-probe:holders"
_MAX_POLL_PAUSE_S: Final = 0.02
_DEADLINE_S: Final = 60.0
_WORK_ROUND_TRIPS: Final = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--cycles", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    client = redis_from_url(args.redis_url)
    slots = ProviderSlots(
        client, RedisKeys(args.prefix), lease_s=60, waiter_ttl_s=20, min_retry_after_s=0.005, max_retry_after_s=5
    )
    probe = args.prefix + PROBE_SUFFIX
    grants = releases = violations = max_seen = 0
    deadline = time.monotonic() + _DEADLINE_S
    for cycle in range(args.cycles):
        holder = f"{args.name}-{cycle}"
        priority = PRIORITY_SINGLE if cycle % 3 == 0 else PRIORITY_BULK
        while True:
            if time.monotonic() > deadline:
                print(json.dumps({"error": "deadline passed while waiting for a slot"}))
                return 1
            result = slots.try_acquire(args.site, holder, args.limit, priority=priority)
            if isinstance(result, Granted):
                break
            # Backing off between polls is this load generator's pacing, not test synchronisation.
            time.sleep(min(result.retry_after_s, _MAX_POLL_PAUSE_S))
        grants += 1
        seen = int(client.incr(probe))
        max_seen = max(max_seen, seen)
        violations += seen > args.limit
        for _ in range(_WORK_ROUND_TRIPS):
            client.ping()
        client.decr(probe)
        releases += slots.release(result.lease)
    print(json.dumps({"grants": grants, "releases": releases, "max_seen": max_seen, "violations": violations}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
