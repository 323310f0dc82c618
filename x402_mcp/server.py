"""Builds the MCP server: one paid tool per catalog entry, plus the free money tools.

A paid call runs in three steps the SDK wires together: `prepare` (validate, ask the price:
free), `approve` (asks the user through elicitation when the policy wants it), then the tool
body, which pays once. The steps are resolvers, so the approval works on both protocol
generations (a mid-call request on legacy connections, an input_required round on newer ones).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
import httpx
from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.resolve import AcceptedElicitation, ElicitationResult
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from x402_mcp import __version__, account
from x402_mcp.catalog import CATALOG, ToolSpec
from x402_mcp.config import Settings
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import Ledger
from x402_mcp.services import Services
from x402_mcp.tools import Prepared, ProgressReporter, finish_call, prepare_call

log = logging.getLogger(__name__)

SERVER_NAME = "x402-images"

PAID_TOOL_ANNOTATIONS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)
FREE_TOOL_ANNOTATIONS = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)


class ApprovePayment(BaseModel):
    """The user's answer to a payment confirmation."""

    approve: bool = Field(description="Pay this amount to this payee?")


class NoApprovalNeeded(BaseModel):
    """The approval step's answer when the policy did not ask, or the client cannot be asked."""

    client_can_ask: bool = True


def _instructions(settings: Settings) -> str:
    prices = ", ".join(f"{spec.name} about ${spec.listed_price}" for spec in CATALOG)
    return (
        "Paid image tools. Each call pays the upstream in USDC over x402 from the user's wallet "
        f"({prices}; never above X402_MAX_PER_CALL = {settings.max_per_call} USDC, within a daily budget of "
        f"{settings.daily_budget} USDC). Results carry the image URL, its metadata and the payment receipt. "
        "Inputs are checked before paying: a rejected input costs nothing. `quote` gives a price for free; "
        "`wallet_status` shows the balance and budget left. Do not retry a paid call just to check it: "
        "see `payment_history`."
    )


def _signature_parameters(spec: ToolSpec) -> list[inspect.Parameter]:
    """The spec's input model as keyword-only parameters, for MCPServer's schema derivation."""
    return [
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


def _set_signature(
    fn: Callable[..., Any], name: str, parameters: list[inspect.Parameter], returns: Any
) -> None:
    fn.__name__ = fn.__qualname__ = name  # the qualname keys the resolver's elicitation state
    fn.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}


def _context_parameter(name: str = "ctx") -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Context)


def _paid_tool(spec: ToolSpec) -> Callable[..., Awaitable[CallToolResult]]:
    """The three steps of one catalog entry, as functions with the entry's signature.

    MCPServer derives a tool's schema from its function's signature, and resolvers take tool
    arguments by name, so the catalog's model becomes both signatures: one generic body
    serves every entry.
    """

    async def prepare(ctx: Context[Services, Any], **arguments: Any) -> Prepared:
        services = ctx.request_context.lifespan_context
        progress = ProgressReporter(ctx.report_progress).stage()
        return await prepare_call(spec, arguments, services, progress)

    _set_signature(
        prepare, f"prepare_{spec.name}", [*_signature_parameters(spec), _context_parameter()], Prepared
    )

    def approve(
        ctx: Context[Services, Any], prepared: Annotated[Prepared, Resolve(prepare)]
    ) -> NoApprovalNeeded | Elicit[ApprovePayment]:
        quote = prepared.quote
        if quote is None or not quote.needs_approval:
            return NoApprovalNeeded()
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return NoApprovalNeeded(client_can_ask=False)
        reason = quote.decision.reason if quote.decision else ""
        return Elicit(
            f"Approve a payment of {format_usdc(quote.amount)} USDC to {quote.pay_to} on "
            f"{quote.chosen.network.name if quote.chosen else '?'} for {spec.name}? ({reason})",
            ApprovePayment,
        )

    # Real objects, not the strings `from __future__ import annotations` leaves: `prepare` is local.
    _set_signature(
        approve,
        f"approve_{spec.name}",
        [
            _context_parameter(),
            inspect.Parameter(
                "prepared", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Prepared, Resolve(prepare)]
            ),
        ],
        NoApprovalNeeded | Elicit[ApprovePayment],
    )

    async def call(
        ctx: Context[Services, Any],
        prepared: Annotated[Prepared, Resolve(prepare)],
        approval: Annotated[ElicitationResult[ApprovePayment], Resolve(approve)],
        **_: Any,
    ) -> CallToolResult:
        services = ctx.request_context.lifespan_context
        approved = False
        refusal = "the user did not approve it"
        if isinstance(approval, AcceptedElicitation):
            if isinstance(approval.data, ApprovePayment):
                approved = approval.data.approve
            elif isinstance(approval.data, NoApprovalNeeded) and not approval.data.client_can_ask:
                refusal = (
                    "this MCP client cannot ask the user for approval (no elicitation support); "
                    "raise X402_CONFIRM_ABOVE in the server's configuration to allow such payments"
                )
        return await finish_call(prepared, services, approved=approved, refusal=refusal)

    parameters = [
        *_signature_parameters(spec),
        _context_parameter(),
        inspect.Parameter(
            "prepared", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Prepared, Resolve(prepare)]
        ),
        inspect.Parameter(
            "approval",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[ElicitationResult[ApprovePayment], Resolve(approve)],
        ),
    ]
    _set_signature(call, spec.name, parameters, Annotated[CallToolResult, spec.output_model])
    call.__doc__ = spec.description
    return call


def _register_account_tools(server: MCPServer[Services]) -> None:
    @server.tool(
        name="wallet_status",
        title="Wallet status",
        description=(
            "Free. The paying wallet: address, network, on-chain USDC balance, spent today, budget left, "
            "limits, and payments whose outcome is still unknown (they count against the budget)."
        ),
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    async def wallet_status(ctx: Context[Services, Any]) -> Annotated[CallToolResult, account.WalletStatus]:
        status = await account.wallet_status(ctx.request_context.lifespan_context)
        return CallToolResult(
            content=[TextContent(type="text", text=account.wallet_status_text(status))],
            structured_content=status.model_dump(mode="json"),
        )

    @server.tool(
        name="payment_history",
        title="Payment history",
        description="Free. Recent payments from the local ledger, newest first, with what each bought.",
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    def payment_history(
        ctx: Context[Services, Any],
        limit: Annotated[int, Field(ge=1, le=200, description="How many payments to list.")] = 20,
        tool: Annotated[
            Literal[account.PAID_TOOL_NAMES] | None,  # type: ignore[valid-type]
            Field(description="Only this tool's payments."),
        ] = None,
    ) -> list[account.PaymentEntry]:
        return account.payment_history(ctx.request_context.lifespan_context, limit, tool)

    @server.tool(
        name="quote",
        title="Quote a tool call",
        description=(
            "Free. What a paid tool call would cost: asks the upstream for its price (its 402 challenge) "
            "without signing or paying, and says whether the configured limits allow it."
        ),
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    async def quote(
        ctx: Context[Services, Any],
        tool: Annotated[Literal[account.PAID_TOOL_NAMES], Field(description="The paid tool to price.")],  # type: ignore[valid-type]
        arguments: Annotated[dict[str, Any], Field(description="The arguments you would call it with.")],
    ) -> account.QuoteResult:
        services = ctx.request_context.lifespan_context
        progress = ProgressReporter(ctx.report_progress, total=1).stage()
        return await account.quote(services, tool, arguments, progress)


def build_server(
    settings: Settings, *, http: httpx.AsyncClient | None = None, ledger: Ledger | None = None
) -> MCPServer[Services]:
    """The MCP server for `settings`. `http` and `ledger` replace the defaults (tests share them)."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Services]) -> AsyncIterator[Services]:
        async with anyio.create_task_group() as background:
            if http is not None:
                services = Services(settings, http, ledger)
                background.start_soon(services.reconciler.run_in_background)
                yield services
            else:
                timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
                headers = {"User-Agent": f"x402-image-mcp/{__version__}"}
                async with httpx.AsyncClient(
                    timeout=timeout, headers=headers, follow_redirects=False
                ) as client:
                    services = Services(settings, client, ledger)
                    background.start_soon(services.reconciler.run_in_background)
                    yield services
            background.cancel_scope.cancel()
        if ledger is None:
            services.close()

    server: MCPServer[Services] = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=_instructions(settings),
        lifespan=lifespan,
        log_level="WARNING",
    )
    for spec in CATALOG:
        server.add_tool(
            _paid_tool(spec),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=PAID_TOOL_ANNOTATIONS,
        )
    _register_account_tools(server)
    return server
