"""The ASGI application: the four providers' send endpoints, with faults, and the control API.

Every request to a send endpoint takes one draw from the fault plan's random sequence, in
arrival order, so a seeded plan injects the same faults into the same sequence of requests
(posting a plan, or resetting, starts its sequence again). The control API is never faulted.
A ``late`` request is answered only after its delay although it is recorded at once; a
dropped one is read, then its connection is closed without an answer or a record.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipeline.emulator import mailgun, postmark, resend, sendgrid
from pipeline.emulator.common import Call, read_body
from pipeline.emulator.state import FAULTS_SCHEMA, PROVIDERS, Emulator, FaultPlan

PROVIDER_MODULES: dict[str, ModuleType] = {"postmark": postmark, "sendgrid": sendgrid, "mailgun": mailgun,
                                           "resend": resend}
DROP = "emulator.drop"  # the scope key of the callable that closes the request's connection
_faults_checker = Draft202012Validator(FAULTS_SCHEMA)

log = logging.getLogger("newsletter.emulator")


def create_app(emulator: Emulator | None = None, *, keys: dict[str, str] | None = None,
               seed: int | None = None) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The emulator as an ASGI application; its state is ``app.emulator``."""
    emulator = emulator or Emulator(keys=dict(keys or {}), seed=seed)
    routes = [Route(module.PATH, _send_endpoint(module), methods=["POST"]) for module in PROVIDER_MODULES.values()]
    routes += [
        Route("/", _index, methods=["GET"]),
        Route("/_emulator/messages", _messages, methods=["GET"]),
        Route("/_emulator/stats", _stats, methods=["GET"]),
        Route("/_emulator/reset", _reset, methods=["POST"]),
        Route("/_emulator/faults", _faults, methods=["GET", "POST"]),
        Route("/_emulator/webhooks", _webhooks, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = emulator
    return EmulatorApp(app, emulator)


class EmulatorApp:
    """The Starlette app, given a way to drop the connection of the request it is serving."""

    def __init__(self, app: Starlette, emulator: Emulator):
        self.app, self.emulator = app, emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[DROP] = lambda: _close_connection(receive)
        if scope["path"].startswith("/_emulator") or scope["path"] == "/":
            await self.app(scope, receive, send)
            return
        self.emulator.sending.begin()
        try:
            await self.app(scope, receive, send)
        finally:
            self.emulator.sending.end()  # the answer is with the server, on its way out


def _close_connection(receive: Receive) -> None:
    """Close the client's connection without an answer.

    ASGI has no message for this, so it reaches uvicorn's request cycle (the owner of the
    ``receive`` callable) and closes its transport, marking the cycle disconnected so that
    uvicorn does not answer 500 for the missing response.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs the uvicorn server (h11 or httptools)")
    cycle.disconnected = True  # type: ignore[union-attr]
    transport.close()


def _send_endpoint(module: ModuleType) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        emulator: Emulator = request.app.state.emulator
        fault = emulator.faults.draw()
        emulator.requests[module.NAME] += 1
        try:
            body = await read_body(request, module.MAX_BODY)
        except ClientDisconnect:  # the sender went away mid-request (killed, say): nothing arrived, nothing recorded
            log.info("%s: the client went away before its request had arrived; nothing recorded", module.NAME)
            return Response(status_code=400)  # never sent: nobody is there
        if body is not None:
            emulator.bodies.add(body, request.headers.get("content-type", ""))
        if emulator.faults.plan.latency_ms:
            await asyncio.sleep(emulator.faults.plan.latency_ms / 1000)
        if fault is not None:
            emulator.injected[str(fault.status) if fault.status else fault.kind] += 1
        if fault is not None and fault.kind == "drop":
            request.scope[DROP]()
            return Response(status_code=204)  # never sent: the connection is closed
        if fault is not None and fault.kind in ("status", "rate_limit"):
            retry_after = str(math.ceil(fault.delay_s)) if fault.kind == "rate_limit" else None
            response = module.fault_response(fault.status, retry_after)
        elif body is None:
            response = module.too_large()
        else:
            response = await module.handle(Call.of(request, body, emulator))
        emulator.responses[module.NAME][response.status_code] += 1
        if fault is not None and fault.kind == "late":
            await asyncio.sleep(fault.delay_s)  # recorded already: the client may give up first
        return response

    endpoint.__name__ = f"{module.NAME}_send"
    return endpoint


async def _index(request: Request) -> Response:
    return JSONResponse({
        "emulator": "newsletter provider emulator",
        "providers": {name: f"POST {module.PATH}" for name, module in PROVIDER_MODULES.items()},
        "control": ["GET /_emulator/messages?provider=&to=&batch=&limit=&offset=", "GET /_emulator/stats",
                    "POST /_emulator/reset", "GET /_emulator/faults", "POST /_emulator/faults",
                    "GET /_emulator/webhooks"],
    })


def _int_param(request: Request, name: str, minimum: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    number = int(value)  # ValueError: reported as 400 by the caller
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}")
    return number


async def _messages(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    provider = request.query_params.get("provider") or None
    if provider is not None and provider not in PROVIDERS:
        return JSONResponse({"error": f"unknown provider {provider!r}: use one of {', '.join(PROVIDERS)}"}, 400)
    try:
        batch, limit = _int_param(request, "batch", 1), _int_param(request, "limit", 0)
        offset = _int_param(request, "offset", 0) or 0
    except ValueError as exc:
        return JSONResponse({"error": f"bad query parameter: {exc}"}, 400)
    total, page = emulator.mailbox.find(provider=provider, to=request.query_params.get("to") or None, batch=batch,
                                        offset=offset, limit=limit)
    return JSONResponse({"count": total, "offset": offset, "limit": limit,
                         "messages": [record.to_dict() for record in page]})


async def _stats(request: Request) -> Response:
    return JSONResponse(request.app.state.emulator.stats())


async def _reset(request: Request) -> Response:
    request.app.state.emulator.reset()
    return JSONResponse({"reset": True})


async def _webhooks(request: Request) -> Response:
    """The webhooks' summary, every outcome decided, and the variables ``newsletter serve`` needs to check them
    (the emulator's own throwaway keys: it listens on loopback for rehearsals)."""
    poster = request.app.state.emulator.webhooks
    if poster is None:
        return JSONResponse({"error": "webhooks are off: start the emulator with --webhook-url"}, 404)
    from pipeline.emulator.webhooks import outcomes_json

    return JSONResponse({**outcomes_json(poster), "environment": poster.keys.environment()})


async def _faults(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    if request.method == "POST":
        try:
            data: Any = await request.json()
        except ValueError:
            return JSONResponse({"error": "the fault plan must be a JSON object"}, 400)
        problem = next(iter(_faults_checker.iter_errors(data)), None)
        if problem is not None:
            where = "/".join(str(part) for part in problem.absolute_path) or "plan"
            return JSONResponse({"error": f"{where}: {problem.message}"}, 400)
        try:
            emulator.faults.configure(FaultPlan.from_json(data, default_seed=emulator.seed))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse(emulator.faults.plan.to_json())
