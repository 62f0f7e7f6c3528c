"""The benchmark's baseline: uvicorn serving no-op FastAPI routes with the API's server settings.

`python -m bench.noop_app` prints the same "listening on" line as `sccm-refresh api`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.server import listen, run

__all__ = ["app", "main"]

app = FastAPI()


@app.get("/noop")
async def noop_get() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/noop", status_code=202)
async def noop_post(body: dict[str, Any]) -> dict[str, int]:
    return {"keys": len(body)}


def main() -> int:
    run(app, listen("127.0.0.1", 0), log_level="WARNING", max_connections=1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
