"""ASGI middleware in front of the API: request-body size cap and truthful ``OPTIONS``.

- A body larger than ``max_body`` bytes is refused with 413 before the app reads any of it
  (declared ``Content-Length``), or as soon as the stream passes the cap (chunked uploads), so
  no request can make the backend hold more than ``max_body`` bytes of it.
- ``OPTIONS`` on any path answers 204 with ``Allow`` listing every method that some route
  serves at that path (Starlette alone answers with the methods of the first route whose pattern
  matches, e.g. ``Allow: GET`` on a POST route shadowed by ``/api/jobs/{job_id}``).
"""

from __future__ import annotations

import json

from starlette.routing import Match

#: 32 MiB: the largest legitimate body is a caption corpus (the viewer caps its file at 20 MB).
MAX_BODY_BYTES = 32 * 2**20


class RequestLimits:
    """``routes()``: every leaf route of the app (path and methods), for ``OPTIONS``."""

    def __init__(self, app, routes, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.routes = routes
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self._options(scope, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _send_json(send, 413, self._too_large())
            return
        if declared is not None or scope["method"] in ("GET", "HEAD"):
            # The server holds a body to its declared length, which is within the cap.
            await self.app(scope, receive, send)
            return
        # A body without a declared length: read it up to the cap before the app sees any of it.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _send_json(send, 413, self._too_large())
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> dict:
        return {"detail": f"request body larger than {self.max_body // 2**20} MiB"}

    async def _options(self, scope, send) -> None:
        methods: set[str] = set()
        for route in self.routes():
            match, _ = route.matches({**scope, "method": "GET"})
            if match != Match.NONE:
                methods |= set(route.methods or ())
        if not methods:
            await _send_json(send, 404, {"detail": "Not Found"})
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
        await send({"type": "http.response.body", "body": b""})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
