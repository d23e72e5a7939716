"""``edgewise dashboard``: a live page of the fleet, fed by the topics the agents publish.

A small ASGI app (Starlette, served by uvicorn in a thread): ``/`` is one HTML page with
its script and SVG charts inline (no build step, no CDN: it works offline), ``/events`` a
server-sent event stream of the fleet's state (``monitor.dashboard_state``), ``/api/try``
sends one request to a model and returns its answer. It binds 127.0.0.1 unless told
otherwise, and anywhere else it requires a token (``?token=`` or ``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from edgewise.edge.endpoint import Endpoint
from edgewise.edge.errors import EdgewiseError
from edgewise.edge.mqtt import MqttConnection
from edgewise.monitor.dashboard_page import PAGE
from edgewise.monitor.dashboard_state import FleetView

MAX_TRY_BYTES = 64 * 1024
TRY_TIMEOUT_S = 10.0
PUSH_EVERY_S = 0.25


def is_loopback(bind: str) -> bool:
    return bind in ("127.0.0.1", "::1", "localhost")


def build_app(view: FleetView, conn: MqttConnection, token: str | None) -> Any:
    """The Starlette application."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token") or ""
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        return hmac.compare_digest(given.encode(), token.encode())

    def refused() -> Response:
        return JSONResponse({"error": "a token is required (?token=...)"}, status_code=401)

    async def page(request: Request) -> Response:
        if not allowed(request):
            return refused()
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": "default-src 'self' "
                            "'unsafe-inline'; img-src 'self' data:"})  # fmt: skip

    async def state(request: Request) -> Response:
        return JSONResponse(view.snapshot()) if allowed(request) else refused()

    async def events(request: Request) -> Response:
        if not allowed(request):
            return refused()

        async def stream() -> AsyncIterator[str]:
            seen = -1
            while not await request.is_disconnected():
                if view.version != seen:
                    seen = view.version
                    yield f"data: {json.dumps(view.snapshot())}\n\n"
                await asyncio.sleep(PUSH_EVERY_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    async def try_it(request: Request) -> Response:
        if not allowed(request):
            return refused()
        body = await request.body()
        if len(body) > MAX_TRY_BYTES:
            return JSONResponse({"error": f"at most {MAX_TRY_BYTES} bytes"}, status_code=413)
        try:
            doc = json.loads(body)
            device, model, instances = doc["device"], doc["model"], doc["instances"]
            if not isinstance(instances, list) or not 1 <= len(instances) <= 100:
                raise ValueError("instances: a list of 1..100")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        if (
            not isinstance(device, str)
            or not isinstance(model, str)
            or not view.serves(device, model)
        ):
            return JSONResponse({"error": "no such device and model"}, status_code=404)
        rid = f"dashboard-{uuid.uuid4().hex[:12]}"
        event, box = view.expect(rid)
        try:
            topic = f"{view.prefix}/{device}/{model}/in"
            conn.publish(topic, json.dumps({"id": rid, "instances": instances}), qos=1)
            got = await asyncio.to_thread(event.wait, TRY_TIMEOUT_S)
        finally:
            view.forget(rid)
        if not got:
            return JSONResponse({"error": f"no answer within {TRY_TIMEOUT_S:g}s"}, status_code=504)
        return JSONResponse(box[0])

    return Starlette(routes=[
        Route("/", page), Route("/api/state", state), Route("/events", events),
        Route("/api/try", try_it, methods=["POST"]),
    ])  # fmt: skip


@contextmanager
def serve_dashboard(
    broker: Endpoint,
    prefix: str,
    bind: str,
    port: int,
    token: str | None,
    protocol: str = "auto",
) -> Iterator[str]:
    """Subscribe to the fleet's topics and serve the page; yields its URL."""
    import uvicorn

    if token is None and not is_loopback(bind):
        raise EdgewiseError(
            f"--bind {bind} exposes the dashboard: give a token (--token-file FILE or "
            "$EDGEWISE_DASHBOARD_TOKEN), or bind 127.0.0.1"
        )
    view = FleetView(prefix)
    conn = MqttConnection(broker, protocol=protocol, on_message=view.on_message,
                          subscriptions=view.subscriptions(), quiet=True)  # fmt: skip
    config = uvicorn.Config(build_app(view, conn, token), host=bind, port=port,
                            log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard-http", daemon=True)
    conn.start()
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise EdgewiseError(f"cannot listen on {bind}:{port}")
            thread.join(0.05)
        yield f"http://{bind}:{port}/"
    finally:
        server.should_exit = True
        thread.join(5)
        conn.stop(final_status=None, timeout=2)
