"""Shared pytest wiring: fixtures live in the installed `testing` package, one module per service."""

pytest_plugins = [
    "testing.fixtures_redis",
    "testing.fixtures_emulator",
    "testing.fixtures_pipeline",
    "testing.fixtures_api",
    "testing.fixtures_worker",
]
