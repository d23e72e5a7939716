"""``edgewise dashboard``: the fleet console, fed by the topics the agents publish.

A small ASGI app (Starlette, served by uvicorn in a thread): ``/`` is the page, with its
script and stylesheet beside it (``console/``: no build step, no CDN, it works offline),
``/events`` a server-sent event stream of device summaries that sends only what changed
(``monitor.dashboard_state``), ``/api/device`` one device's page with its history,
``/api/try`` sends one request to a model and returns its answer. It binds 127.0.0.1
unless told otherwise, and anywhere else it requires a token (``?token=`` or
``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from edgewise.edge.errors import EdgewiseError
from edgewise.edge.link.endpoint import Endpoint
from edgewise.edge.link.mqtt import MqttConnection
from edgewise.monitor.dashboard_history import RANGES_S
from edgewise.monitor.dashboard_state import FleetView

MAX_TRY_BYTES = 64 * 1024
TRY_TIMEOUT_S = 10.0
PUSH_EVERY_S = 1.0
ASSETS = {  # path -> (file under console/, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"


def _asset(name: str) -> bytes:
    return resources.files("edgewise.monitor").joinpath("console", name).read_bytes()


class Pusher:
    """One browser's event stream: the first message holds every device, later ones only
    the summaries that changed, the devices gone, the new feed lines and the broker link."""

    def __init__(self, view: FleetView, connected: Any) -> None:
        self.view = view
        self.connected = connected
        self.sent: dict[str, str] = {}
        self.seq = 0
        self.broker: bool | None = None

    def next(self) -> dict[str, Any] | None:
        """The next message, or None when nothing changed."""
        now = time.time()
        changed = {}
        summaries = self.view.summaries(now)
        for name, summary in summaries.items():
            text = json.dumps(summary, sort_keys=True)
            if self.sent.get(name) != text:
                self.sent[name] = text
                changed[name] = summary
        removed = [name for name in self.sent if name not in summaries]
        for name in removed:
            del self.sent[name]
        events = self.view.events_since(self.seq)
        if events:
            self.seq = events[-1]["seq"]
        up = bool(self.connected())
        if not (changed or removed or events or up != self.broker):
            return None
        self.broker = up
        return {"now": now, "prefix": self.view.prefix, "broker": {"connected": up},
                "devices": changed, "removed": removed, "events": events}  # fmt: skip


def is_loopback(bind: str) -> bool:
    return bind in ("127.0.0.1", "::1", "localhost")


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def host_names(bind: str, allow: tuple[str, ...] = ()) -> frozenset[str]:
    """The Host header names the dashboard answers: the bind address, the loopback names,
    ``allow``, and for a wildcard bind (0.0.0.0, ::; a token is required there) this
    machine's own names and addresses. Anything else is a DNS rebinding page: a site whose
    name the attacker points at 127.0.0.1 after the browser loaded it."""
    import socket

    names = {bind.lower(), *LOOPBACK_NAMES, *(a.lower() for a in allow)}
    if bind in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
        names |= {host.lower(), socket.getfqdn().lower()}
        with contextlib.suppress(OSError):
            names |= set(socket.gethostbyname_ex(host)[2])
    return frozenset(names)


def _host_of(value: str) -> str:
    """``name`` of a Host header ``name[:port]`` (IPv6 in brackets kept)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def build_app(
    view: FleetView, conn: MqttConnection, token: str | None, hosts: frozenset[str] | None = None
) -> Any:
    """The Starlette application. ``hosts``: the Host names answered (None: any)."""
    from urllib.parse import urlsplit

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def allowed(request: Request, public: bool = False) -> bool:
        """``public``: the script and stylesheet, which hold no data (a page cannot add
        its ?token= to them), still only under the dashboard's own Host names."""
        if hosts is not None and _host_of(request.headers.get("host", "")) not in hosts:
            return False  # DNS rebinding: attacker.example resolving to this address
        if token is None or public:
            return True
        given = request.query_params.get("token") or ""
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        return hmac.compare_digest(given.encode(), token.encode())

    def refused() -> Response:
        return JSONResponse(
            {"error": "a token is required (?token=...) and the Host must be the dashboard's"},
            status_code=401,
        )

    def same_origin_json(request: Request) -> str | None:
        """Why a state-changing request is refused: it must be JSON (a cross-site form or
        text/plain POST needs no preflight) and come from this page (Origin = Host)."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return "Content-Type must be application/json"
        origin = request.headers.get("origin")
        if (
            origin is not None
            and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
        ):
            return "cross-origin requests are refused"
        return None

    async def asset(request: Request) -> Response:
        if not allowed(request, public=request.url.path != "/"):
            return refused()
        name, media = ASSETS[request.url.path]
        return Response(_asset(name), media_type=media,
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})  # fmt: skip

    async def state(request: Request) -> Response:
        return JSONResponse(view.snapshot()) if allowed(request) else refused()

    async def events(request: Request) -> Response:
        if not allowed(request):
            return refused()

        pusher = Pusher(view, lambda: conn.connected)

        async def stream() -> AsyncIterator[str]:
            while not await request.is_disconnected():
                if (doc := pusher.next()) is not None:
                    yield f"data: {json.dumps(doc)}\n\n"
                else:
                    yield ": idle\n\n"  # a comment line: the browser sees the link alive
                await asyncio.sleep(PUSH_EVERY_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    async def device(request: Request) -> Response:
        if not allowed(request):
            return refused()
        name = request.query_params.get("name", "")
        span = request.query_params.get("range", "15m")
        if span not in RANGES_S:
            return JSONResponse({"error": f"range: one of {', '.join(RANGES_S)}"}, 400)
        doc = view.device(name, span)
        if doc is None:
            return JSONResponse({"error": "no such device"}, status_code=404)
        doc["broker"] = {"connected": bool(conn.connected)}
        return JSONResponse(doc)

    async def try_it(request: Request) -> Response:
        if not allowed(request):
            return refused()
        if (why := same_origin_json(request)) is not None:
            return JSONResponse({"error": why}, status_code=403)
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
        *(Route(path, asset) for path in ASSETS), Route("/api/state", state),
        Route("/api/device", device), Route("/events", events),
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
    allow_hosts: tuple[str, ...] = (),
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
    app = build_app(view, conn, token, host_names(bind, allow_hosts))
    config = uvicorn.Config(app, host=bind, port=port,
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
