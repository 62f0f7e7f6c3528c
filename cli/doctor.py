"""`sccm-refresh doctor`: is this deployment able to take requests, and are any lost on the way?

Checks, one line each: settings load; the broker and the outcome Redis answer; how many messages
wait in our queue; how many of our task messages sit in Celery's default queue (a producer that
forgot the routing: no worker of ours will ever take them); which workers consume our queue;
for each Kerberos provider, the logon, the SPN's ticket and an authenticated Get (cli/doctor_kerberos.py).
Exit 0 when all is well, 1 otherwise.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from cli.doctor_kerberos import check_kerberos_provider
from config.settings import get_settings
from worker.app import app
from worker.broker.misrouting import DEFAULT_CELERY_QUEUE, count_misrouted
from worker.stores.redis_client import redis_from_url

__all__ = ["doctor"]

_INSPECT_TIMEOUT_S = 2.0
MIN_REDIS = "6.2"


def _at_least(version: str, minimum: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) if p.isdigit() else 0 for p in text.split(".")[:2])

    return parts(version) >= parts(minimum)


def doctor() -> int:
    settings = get_settings()
    problems = 0

    def line(ok: bool, text: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {text}", flush=True)

    line(
        True,
        f"settings: queue {settings.queue!r}, key prefix {settings.key_prefix!r}, sites {sorted(settings.providers)}",
    )
    try:
        broker = redis_from_url(settings.broker_url)
        waiting = int(broker.llen(settings.queue))
        misrouted = count_misrouted(broker)
        line(True, f"broker answers; {waiting} message(s) wait in queue {settings.queue!r}")
        version = str(broker.info("server").get("redis_version", "0"))
        line(
            _at_least(version, MIN_REDIS),
            f"broker Redis {version}"
            + ("" if _at_least(version, MIN_REDIS) else f": workers need {MIN_REDIS} (BLMOVE) to never lose a message"),
        )
        line(
            misrouted.ours == 0,
            f"{misrouted.estimated_ours} sccm.* message(s) in Celery's default queue {DEFAULT_CELERY_QUEUE!r}"
            + ("" if misrouted.ours == 0 else f": no worker of ours consumes it; send to queue {settings.queue!r}"),
        )
    except RedisError as exc:
        line(False, f"broker unreachable ({type(exc).__name__})")
    try:
        redis_from_url(settings.redis_url).ping()
        line(True, "outcome Redis answers")
    except RedisError as exc:
        line(False, f"outcome Redis unreachable ({type(exc).__name__})")
    replies = app.control.inspect(timeout=_INSPECT_TIMEOUT_S).active_queues() or {}
    consuming = sorted(name for name, queues in replies.items() if any(q.get("name") == settings.queue for q in queues))
    line(bool(consuming), f"worker(s) consuming {settings.queue!r}: {', '.join(consuming) or 'none answered'}")
    for site_code, provider in sorted(settings.providers.items()):
        if provider.transport == "kerberos":
            check_kerberos_provider(site_code, provider, line)
    return 0 if problems == 0 else 1
