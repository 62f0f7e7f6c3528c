"""The embedded default: a Redis server and Celery worker processes started and stopped by PID.

What `make demo` runs on a machine with nothing installed, and what the integration tests, the
chaos suite and the benchmarks start. Below the entry points (cli, testing, bench, chaos), above
nothing of the product but the worker's environment rules.
"""
