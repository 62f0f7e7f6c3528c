"""The worker: one refresh request, from the broker to its outcome (docs/architecture.md).

    worker/usecase/   the refresh use case: its steps, ports and value types (no I/O, no Celery)
    worker/domain/    ConfigMgr rules, the request and outcome documents, ids (pure)
    worker/provider/  the SMS Provider client: WinRM transport, WS-Man calls, what failures mean
    worker/wsman/     the WS-Management wire: envelopes, one bounded parser, faults (a leaf)
    worker/stores/    the Redis stores and their Lua: slots, coalescing, fences, bulks, outcomes
    worker/broker/    how a message is taken from the broker (kombu's Redis transport, hardened)

and, directly here, what ties them into a Celery worker: the app (app, celeryconfig), the
process-wide objects (runtime), the hooks into the worker's life (lifecycle), the custom task
states Flower shows (task_states), the bulk runner (bulk_job) and the retry policy's arithmetic
(retry). The tasks themselves are in tasks/, the producers in producers/.

Nothing is imported here: `import worker.domain` must not pay for the rest.
"""
