"""The API's routes, one module per resource, each exposing its `router` (api.app includes them).

* refreshes: submit one or many refreshes, read a request's state and a package's latest state.
* bulk: start a bulk refresh (or a dry run), read its state and counts, cancel it.
* events: `GET /v1/events`, outcomes as Server-Sent Events.
* health: `/healthz` and `/readyz`, open, no token.
* metrics: `GET /metrics`, Prometheus text behind a `read` token.
"""

from api.routes import bulk, events, health, metrics, refreshes

__all__ = ["bulk", "events", "health", "metrics", "refreshes"]
