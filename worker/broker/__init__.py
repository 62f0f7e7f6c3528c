"""The broker side of the worker: how a message is taken from the broker, in one place.

How is a message taken from the broker? On Redis (the only broker the worker hardens):

1. A producer pushes a Celery protocol 2 message (JSON) onto the Redis list named by the queue
   (`SCCM_REFRESH_QUEUE`, kombu's layout: one list per queue and priority). Celery's
   `send_task` does it through kombu; the API builds the same message itself
   (producers/celery_message.py) and pushes it with one LPUSH.
2. The worker's Celery app names our transport (`broker_transport = "sccm-redis"`,
   worker/app.py), an alias that transport.py registers with kombu: kombu's Redis transport
   with only the take replaced, so Celery's consumer, QoS and acks are kombu's own.
3. Taking (transport.py, `Channel._brpop_start` / `_brpop_read`): a blocking BLMOVE waits up to
   a second on the refresh queue and *moves* the message into this consumer's in-flight list;
   at least once a second, and after a wait that found nothing, take.lua instead moves the
   first message of any consumed queue (the worker's direct queue included), marks the
   consumer alive, and puts the in-flight messages of consumers no longer alive back on their
   queues. The message is never only in the worker's memory.
4. Delivering: kombu's channel hands the message to Celery's consumer, first recording it as
   unacked (`QoS.append`: kombu's unacked hash and index) and, in the same MULTI, removing its
   in-flight entry. A message is always in exactly one of: the queue, an in-flight list,
   unacked.
5. Celery's consumer calls the task's strategy (tasks/message_guard.py: a message Celery
   cannot read still gets a `rejected` outcome), which runs the task (tasks/refresh.py, acks
   late). The ack (or a re-queue: Task.retry publishes the next message, then acks) removes the
   unacked record (ack.lua: only while this consumer still holds it, so the late ack of a worker
   whose holdings were meanwhile put back and taken by another leaves that one's record); a
   countdown message is held unacked in the worker until it is due.
6. Losses: a worker killed between take and delivery leaves the message in its in-flight list,
   restored by the next take.lua once the consumer's alive key expires (at once when the same
   process reconnects); a worker killed while holding it unacked leaves it in its holdings, put
   back through kombu's restore the same way (within about 20 s; the visibility timeout stays as
   the last net). A dead consumer's in-flight list stays watched for a minute, for a blocking
   move that lands late. The invoke fence and the attempt lock (worker/stores/fence.py) keep a
   redelivered request from refreshing twice; the request watch (worker/stores/request_watch.py)
   sends again a request whose message vanished all the same.
7. A Redis refusing writes (full: maxmemory, noeviction; MISCONF; READONLY; NOREPLICAS) refuses
   the take: the consumer pauses (0.5 s doubling to 5 s) and takes again when it can; an ack or
   a re-queue Redis refuses stays unacked and held until the heartbeat can do it (transport.py,
   `QoS`; a full Redis still takes acks, which are deletions).
   Which broker URLs get this transport, and why the others are refused: config/broker.py.

Also here:

    connection_loss.py  Celery's consumer, reconnecting after a broker loss while messages are
                        held (celery 5.7's teardown), the pool-dependent settings, and the start-up
                        refusal of a broker configured in code past the settings' checks. Loaded by
                        Celery by name in the worker only (`worker_consumer`, the app's task
                        modules), never imported here: it hooks `worker_init` and pulls in
                        Celery's worker.
    misrouting.py       our task messages sitting in Celery's default queue, where no worker of
                        ours listens (a warning, `doctor`, /metrics).
"""

from worker.broker.misrouting import DEFAULT_CELERY_QUEUE, Misrouted, count_misrouted, misrouted_in, start_watch
from worker.broker.transport import TRANSPORT, take_script, transport_options

__all__ = [
    "DEFAULT_CELERY_QUEUE",
    "TRANSPORT",
    "Misrouted",
    "count_misrouted",
    "misrouted_in",
    "start_watch",
    "take_script",
    "transport_options",
]
