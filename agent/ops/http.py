"""Kubernetes-style probes and Prometheus metrics over HTTP (aiohttp).

* ``/livez``: the event loop turns (the ticker beat is recent). Never depends on the database:
  restarting a sidecar because the database is down helps nobody.
* ``/readyz``: the database is reachable, ingestion is not stalled, and the bytes not yet
  committed are under the lag budget.
* ``/startupz``: schema checked and checkpoints loaded.
* ``/metrics``: Prometheus text format.

Each probe answers JSON that says why, so ``kubectl describe`` and humans see the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LIVENESS_STALE_S = 15.0


@dataclass(frozen=True, slots=True)
class ProbeView:
    """What the probes read; callables so every request sees the current state."""

    loop_beat: Callable[[], float]
    started: Callable[[], bool]
    db_reachable: Callable[[], bool]
    stalled: Callable[[], str | None]
    last_error: Callable[[], str | None]
    bytes_behind: Callable[[], int]
    max_lag_bytes: int
    registry: CollectorRegistry


def _json(code: int, /, **body: Any) -> web.Response:
    return web.json_response(body, status=code)


def liveness(view: ProbeView) -> web.Response:
    age = time.monotonic() - view.loop_beat()
    if age > LIVENESS_STALE_S:
        return _json(503, status="fail", reason=f"event loop stalled for {age:.1f}s")
    return _json(200, status="ok", loop_age_s=round(age, 3))


def readiness(view: ProbeView) -> web.Response:
    reasons = []
    if not view.started():
        reasons.append("starting: schema not checked or checkpoints not loaded yet")
    if not view.db_reachable():
        reasons.append(f"database unreachable: {view.last_error() or 'not connected'}")
    stalled = view.stalled()
    if stalled:
        reasons.append(f"ingestion stalled: {stalled}")
    behind = view.bytes_behind()
    if view.max_lag_bytes and behind > view.max_lag_bytes:
        reasons.append(f"lag {behind} bytes over the budget of {view.max_lag_bytes}")
    if reasons:
        return _json(503, status="fail", reasons=reasons, bytes_behind=behind)
    return _json(200, status="ok", bytes_behind=behind)


def startup(view: ProbeView) -> web.Response:
    if view.started():
        return _json(200, status="ok")
    return _json(503, status="fail", reason="schema not checked or checkpoints not loaded yet")


def make_app(view: ProbeView) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        return liveness(view)

    async def readyz(_: web.Request) -> web.Response:
        return readiness(view)

    async def startupz(_: web.Request) -> web.Response:
        return startup(view)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(view.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/startupz", startupz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(view: ProbeView, host: str, port: int) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls ``cleanup()`` at shutdown."""
    runner = web.AppRunner(make_app(view), access_log=None, shutdown_timeout=1.0)  # probes answer at once
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
