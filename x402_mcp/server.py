"""Builds the MCP server: one tool per catalog entry, sharing one HTTP client and wallet."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import ValidationError

from x402_mcp import __version__
from x402_mcp.catalog import CATALOG, ToolSpec
from x402_mcp.config import Settings
from x402_mcp.tools import ProgressReporter, Services, error_result, run_paid_tool

log = logging.getLogger(__name__)

SERVER_NAME = "x402-images"

PAID_TOOL_ANNOTATIONS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


def _instructions(settings: Settings) -> str:
    prices = ", ".join(f"{spec.name} about ${spec.listed_price}" for spec in CATALOG)
    return (
        "Paid image tools. Each call pays the upstream in USDC over x402 from the user's wallet "
        f"({prices}; never above X402_MAX_PER_CALL = {settings.max_per_call} USDC). Results carry the image "
        "URL, its metadata and the payment receipt. Inputs are checked before paying: a rejected input "
        "costs nothing. Call once per image you need; do not retry a paid call just to check it."
    )


def _tool_function(spec: ToolSpec) -> Callable[..., Awaitable[CallToolResult]]:
    """An async function whose signature is the spec's input model, for MCPServer to register.

    MCPServer derives a tool's schema from its function's signature, so the catalog's pydantic
    model becomes the signature: one generic body serves every entry.
    """

    async def call(ctx: Context[Services, Any], **arguments: Any) -> CallToolResult:
        try:
            validated = spec.input_model.model_validate(arguments)
        except ValidationError as exc:
            return error_result(f"invalid input for {spec.name}: {exc}", money_spent=False)
        services = ctx.request_context.lifespan_context
        progress = ProgressReporter(ctx.report_progress).stage()
        return await run_paid_tool(spec, validated, services, progress)

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[(field.annotation, field)]
            if field.metadata or field.description
            else field.annotation,
            default=inspect.Parameter.empty if field.is_required() else field.default,
        )
        for name, field in spec.input_model.model_fields.items()
    ]
    parameters.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    output = Annotated[CallToolResult, spec.output_model]
    call.__name__ = spec.name
    call.__doc__ = spec.description
    call.__signature__ = inspect.Signature(parameters, return_annotation=output)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": output}
    return call


def build_server(settings: Settings, *, http: httpx.AsyncClient | None = None) -> MCPServer[Services]:
    """The MCP server for `settings`. `http` replaces the HTTP client (tests point it anywhere)."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Services]) -> AsyncIterator[Services]:
        if http is not None:
            yield Services(settings, http)
            return
        timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
        headers = {"User-Agent": f"x402-image-mcp/{__version__}"}
        async with httpx.AsyncClient(timeout=timeout, headers=headers, follow_redirects=False) as client:
            yield Services(settings, client)

    server: MCPServer[Services] = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=_instructions(settings),
        lifespan=lifespan,
        log_level="WARNING",
    )
    for spec in CATALOG:
        server.add_tool(
            _tool_function(spec),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=PAID_TOOL_ANNOTATIONS,
        )
    return server
