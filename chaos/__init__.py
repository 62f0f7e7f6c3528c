"""The chaos and fuzz suite: scripted scenarios against the real pipeline, one table row each.

`python -m chaos` (or `make chaos`) runs them; docs/chaos.md says what each column means and
what each scenario promises. Layout:

    cli.py            argument parsing, the table, the exit code
    scenario.py       what a scenario is; the common end of a pipeline scenario (accounting, leak search)
    report.py         the accounting and the row (pure)
    ledger.py         a tolerant reader of the outcome stream
    rig.py            the pipeline: own redis-server, emulator, two celery workers, producer, Flower
    workload.py       valid requests over the catalogue, raw messages, sending
    hostile_kwargs.py seeded and hypothesis-driven hostile task kwargs and raw message bodies (pure)
    hostile_replies.py seeded hostile WS-Man replies (pure)
    hostile_wsman.py  a hostile WS-Man HTTP server answering with them
    xml_client.py     the product's SccmClient against it, in a child process (memory measured there)
    scenarios/        one module per scenario; scenarios/__init__.py lists them in order
"""
