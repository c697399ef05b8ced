"""`kickvision review`: the review desk as a local web page over a small JSON API (FastAPI).

FastAPI because it is already here (MLflow's model server runs on it), serves a JSON API that
scripts and tests use as readily as the page does, and needs no front-end build: the page is one
HTML file with its own styles and script, nothing fetched from the internet.

    GET  /                                  the page (Classify, Audit, Drops)
    GET  /api/about                         model, classes, attributes, review threshold, drops
    POST /api/predict                       multipart: image (file), title, attribute fields,
                                            explain (default true), k (similar products, 0-50)
    GET  /api/thumbnail/{source}/{id}       JPEG of a product of the index, the catalog or drop:NAME
    GET  /api/audit?refresh=&top=           the catalog's products, most doubted label first
    POST /api/corrections                   JSON {product_id, action, category, note, reviewer}
    GET  /api/drops, /api/drops/{name}      drop folders; one drop's disagreements and drift

Bad input is a 4xx with a message (`detail`), never a 5xx; request bodies are capped before they
are read; the Host header must name this server (no DNS rebinding from a web page); the decision
endpoint takes JSON only, which a cross-site form cannot send.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from kickvision.errors import KickvisionError
from kickvision.review.service import NotFound, ReviewDesk

PAGE = Path(__file__).with_name("page.html")
FORM_OVERHEAD = 64 * 1024  # title, attributes and multipart boundaries next to the photo
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send):
        body = b'{"detail":"request body too large"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Decision(BaseModel):
    """A reviewer's decision about one catalog product (data/corrections.py)."""

    product_id: str = Field(min_length=1, max_length=200)
    action: str
    category: str = ""
    note: str = ""
    reviewer: str = ""


def create_app(desk: ReviewDesk, host: str = "127.0.0.1") -> FastAPI:
    app = FastAPI(title="kickvision review desk", docs_url=None, redoc_url=None)  # no CDN assets
    hosts = ["*"] if host not in LOOPBACK else ["127.0.0.1", "localhost", "[::1]"]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(BodyLimit, limit=desk.validate.max_image_bytes + FORM_OVERHEAD)

    @app.exception_handler(ValueError)
    async def bad_input(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(KickvisionError)
    async def unusable(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(NotFound)
    async def unknown(request, exc):
        return JSONResponse({"detail": f"not found: {exc.args[0] if exc.args else ''}"}, status_code=404)

    @app.get("/", response_class=HTMLResponse)
    def page():
        # Only this response's own script runs (a nonce): text from a catalog that slipped past
        # escaping could not run script, and nothing is fetched from anywhere but this server.
        nonce = secrets.token_urlsafe(16)
        policy = (
            f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        html = PAGE.read_text(encoding="utf-8").replace("{{nonce}}", nonce)
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    @app.get("/api/about")
    def about():
        return desk.about()

    @app.post("/api/predict")
    async def predict(request: Request):
        form = await request.form(max_files=1, max_fields=50)
        upload = form.get("image")
        image = None
        if upload is not None and not isinstance(upload, str):
            image = await upload.read(desk.validate.max_image_bytes + 1)
        elif isinstance(upload, str) and upload:
            raise ValueError("image must be an uploaded file (multipart), not a text field")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        explain = fields.get("explain", "true").lower() not in ("0", "false", "no", "off")
        k = fields.get("k", "6")
        if not k.isdigit() or int(k) > 50:
            raise ValueError("k must be a whole number from 0 to 50")
        return await run_in_threadpool(desk.predict, image, fields.get("title"), fields, explain=explain, k=int(k))

    @app.get("/api/thumbnail/{source}/{product_id}")
    def thumbnail(source: str, product_id: str):
        return Response(desk.thumbnail(source, product_id), media_type="image/jpeg")

    @app.get("/api/audit")
    def audit(refresh: bool = False, top: Annotated[int, Query(ge=1, le=5000)] = 200):
        return desk.audit(refresh=refresh, top=top)

    @app.post("/api/corrections", status_code=201)
    def corrections(decision: Decision):
        from kickvision.errors import CatalogError

        try:
            return desk.correct(**decision.model_dump())
        except CatalogError as exc:  # a malformed decision is the caller's input
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/drops")
    def drops():
        return {"drops": desk.drop_names()}

    @app.get("/api/drops/{name}")
    def drop(name: str):
        return desk.drop_report(name)

    return app


def serve(desk: ReviewDesk, host: str = "127.0.0.1", port: int = 8080) -> None:
    import uvicorn

    uvicorn.run(create_app(desk, host), host=host, port=port, log_level="warning")
