"""ASGI middleware in front of the API: request-body size cap and truthful ``OPTIONS``.

- A body larger than ``max_body`` bytes is refused with 413 before the app reads any of it
  (declared ``Content-Length``), or as soon as the stream passes the cap (chunked uploads), so
  no request can make the backend hold more than ``max_body`` bytes of it.
- A method the path's route does not serve (``OPTIONS`` included, which the schema declares
  nowhere) answers 405 with ``Allow`` listing the methods of the path's own route, the most
  specific template that matches (Starlette alone could name the methods of another route whose
  pattern also matches, e.g. ``Allow: GET`` for a POST route shadowed by ``/api/jobs/{job_id}``).
"""

from __future__ import annotations

import json

from starlette.routing import Match

#: 32 MiB: the largest legitimate body is a caption corpus (the viewer caps its file at 20 MB).
MAX_BODY_BYTES = 32 * 2**20


class RequestLimits:
    """``routes()``: every leaf route of the app (path and methods), to answer 405s."""

    def __init__(self, app, routes, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.routes = routes
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self._allowed(scope)
        if allowed is not None and scope["method"] not in allowed:
            # 405 for a method the path's own route does not serve (OPTIONS included: the schema
            # declares it nowhere), naming the methods it does serve.
            await _send_json(send, 405, {"detail": "Method Not Allowed"}, [(b"allow", ", ".join(allowed).encode())])
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

    def _allowed(self, scope) -> list[str] | None:
        """The methods of the path's own route (the most specific template that matches: for
        /api/jobs/caption the POST route, not GET /api/jobs/{job_id}); None if no route matches."""
        matching = [r for r in self.routes() if r.matches({**scope, "method": "GET"})[0] != Match.NONE]
        if not matching:
            return None
        fewest = min(len(r.param_convertors) for r in matching)
        return sorted({m for r in matching if len(r.param_convertors) == fewest for m in r.methods or ()})

    def _too_large(self) -> dict:
        return {"detail": f"request body larger than {self.max_body // 2**20} MiB"}


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send, status: int, payload: dict, extra_headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
