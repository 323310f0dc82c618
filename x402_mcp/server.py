"""Builds the MCP server: one paid tool per catalog entry, plus the free money tools.

A paid call runs in three steps the SDK wires together: `prepare` (validate, resolve inputs,
quote: free), `approve` (asks the user through elicitation when the policy wants it), then the
tool body, which pays once. The first two are resolvers, so the approval works on both protocol
generations (a mid-call request on legacy connections, an input_required round on newer ones).
On newer ones the answer comes back beside a sealed requestState that could be sent again:
`ApprovalReplayGuard` lets each be used once, so one approval buys at most one payment.
"""

# No `from __future__ import annotations`: the SDK reads these functions' annotations as objects,
# and the paid tools' closures name their catalog entry's models.

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import anyio
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, Elicit, ListRoots, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver.tools import Tool
from mcp.server.request_state import RequestStateSecurity
from mcp.types import CallToolResult, ListRootsResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from x402_mcp import __version__, account, discovery, image_tools
from x402_mcp import image_convert as image_convert_module
from x402_mcp.approval_replay import STATE_TTL_SECONDS, ApprovalReplayGuard, approval_refusal
from x402_mcp.catalog import CATALOG, ImageResult, ToolSpec, tools_for
from x402_mcp.config import Settings
from x402_mcp.errors import X402Error
from x402_mcp.image_inputs import InputError
from x402_mcp.image_resources import ImageServer, SavedImages
from x402_mcp.images.convert import ConvertSpec, Crop
from x402_mcp.images.masks import MaskSpec, Shape
from x402_mcp.paid_call import Prepared, ProgressReporter, error_result, finish_call, prepare_call
from x402_mcp.payments.assets import format_usdc
from x402_mcp.payments.ledger import LedgerStore
from x402_mcp.payments.policy import Caller
from x402_mcp.services import Services
from x402_mcp.team_users import caller_of
from x402_mcp.variants import finish_variants

if TYPE_CHECKING:
    import httpx  # imported where used: it costs ~40 ms at start

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
    extra = [spec.name for spec in tools_for(settings)[len(CATALOG) :]]
    if extra:
        prices += f"; from the user's catalog file: {', '.join(extra)}, each within its own ceiling"
    return (
        "Paid image tools. Each call pays the upstream in USDC over x402 from the user's wallet "
        f"({prices}; never above X402_MAX_PER_CALL = {settings.max_per_call} USDC, within a daily budget of "
        f"{settings.daily_budget} USDC). Results carry the image URL, its metadata and the payment receipt. "
        "Inputs are checked before paying: a rejected input costs nothing. `quote` gives a price for free; "
        "`wallet_status` shows the balance and budget left. Do not retry a paid call just to check it: "
        "see `payment_history`."
    )


def client_roots(ctx: Context[Services, Any]) -> ListRoots | ListRootsResult:
    """The client's MCP roots, where it offers them: more folders local inputs may come from."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return ListRootsResult(roots=[])
    return ListRoots()


def root_paths(roots: ListRootsResult) -> list[Path]:
    paths = []
    for root in roots.roots:
        uri = str(root.uri)
        if uri.startswith("file://"):
            paths.append(Path(unquote(urlsplit(uri).path)))
    return paths


ClientRoots = Annotated[ListRootsResult, Resolve(client_roots)]


def caller(ctx: Context[Services, Any]) -> Caller:
    """Who this call pays for: the HTTP request's authenticated user, else the server's own (X402_USER)."""
    return caller_of(get_access_token(), Caller(ctx.request_context.lifespan_context.ledger.user))


def call_arguments(ctx: Context[Services, Any]) -> dict[str, Any]:
    """The arguments of this `tools/call` as the client sent them."""
    arguments = (ctx.request_context.params or {}).get("arguments")
    return dict(arguments) if isinstance(arguments, dict) else {}


def _payments_asked(amount: int, count: int) -> str:
    if count == 1:
        return f"a payment of {format_usdc(amount)} USDC"
    return f"{count} payments of {format_usdc(amount)} USDC ({format_usdc(amount * count)} USDC in total)"


def _paid_tool(spec: ToolSpec) -> Tool:
    """One catalog entry as an MCP tool: its input model is the tool's schema, its three steps resolvers.

    The SDK derives a tool's schema from its function's parameters; a catalog tool's arguments are
    its input model instead, so the function takes none, `prepare` validates the call's arguments
    with the model (unknown ones are refused by name, before anything is asked upstream), and the
    model's schema is what the tool publishes. One generic body serves every entry.
    """

    async def prepare(ctx: Context[Services, Any], roots: ClientRoots) -> Prepared:
        services = ctx.request_context.lifespan_context
        progress = ProgressReporter(ctx.report_progress).stage()
        refusal = approval_refusal.get()
        if refusal is not None:  # a replayed approval: refused before anything is asked upstream
            return Prepared(spec, progress, error=error_result(refusal.format(tool=spec.name), money_spent=False))
        return await prepare_call(spec, call_arguments(ctx), services, progress, root_paths(roots), caller(ctx))

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
            f"Approve {_payments_asked(quote.amount, quote.count)} to {quote.pay_to} on "
            f"{quote.chosen.network.name if quote.chosen else '?'} for {spec.name}? ({reason})",
            ApprovePayment,
        )

    async def call(
        ctx: Context[Services, Any],
        prepared: Annotated[Prepared, Resolve(prepare)],
        approval: Annotated[ElicitationResult[ApprovePayment], Resolve(approve)],
    ) -> Annotated[CallToolResult, spec.output_model]:
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
        finish = finish_variants if prepared.count > 1 else finish_call
        return await finish(prepared, services, approved=approved, refusal=refusal)

    tool = Tool.from_function(
        call, name=spec.name, title=spec.title, description=spec.description, annotations=PAID_TOOL_ANNOTATIONS
    )
    # ToolInput forbids extra fields, so the schema says `additionalProperties: false`. Its title is
    # the one the SDK gives a function's arguments, like the free tools' (and as published so far).
    schema = {**spec.input_model.model_json_schema(), "title": f"{spec.name}Arguments"}
    return tool.model_copy(update={"parameters": schema})


class LazyHttpClient:
    """The server's HTTP client, made on first use: its TLS setup would otherwise delay the start."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    def __call__(self) -> "httpx.AsyncClient":
        if self._client is None:
            import httpx

            timeout = httpx.Timeout(self._settings.timeout, connect=self._settings.connect_timeout)
            headers = {"User-Agent": f"x402-image-mcp/{__version__}"}
            self._client = httpx.AsyncClient(timeout=timeout, headers=headers, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class FreeTools:
    """Collects the free tools, whose arguments must match their schema exactly.

    MCPServer's argument models ignore unknown keys, so a misspelt `limt` would vanish and the call
    would still run. The SDK has no option to forbid them, so this is the one place its tool
    metadata is changed: `FuncMetadata` documents its fields as read live, and its argument model
    is replaced by a subclass that forbids extras (an unknown argument is then an error naming it);
    the published schema says `additionalProperties: false`. The paid tools need none of this:
    their catalog models forbid extras themselves.
    """

    def __init__(self) -> None:
        self.tools: list[Tool] = []

    def tool(self, **metadata: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool = Tool.from_function(fn, **metadata)
            loose = tool.fn_metadata.arg_model
            config = ConfigDict(extra="forbid")  # merged with the SDK's own config by pydantic
            strict = type(loose.__name__, (loose,), {"model_config": config, "__module__": loose.__module__})
            tool.fn_metadata.arg_model = strict
            self.tools.append(
                tool.model_copy(update={"parameters": {**tool.parameters, "additionalProperties": False}})
            )
            return fn

        return register


def _register_image_tools(server: FreeTools) -> None:
    @server.tool(
        name="image_mask",
        title="Build an inpainting mask",
        description=(
            "Free. Draw a mask from shapes (rectangles, ellipses, polygons; pixel or 0-1 coordinates; invert; "
            "feather) for a given image or size, save it as a PNG (white = repaint), and return its path and a "
            "preview. Pass the path as image_inpaint's mask."
        ),
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    )
    async def image_mask(
        ctx: Context[Services, Any],
        shapes: Annotated[list[Shape], Field(min_length=1, max_length=50, description="Regions to repaint.")],
        roots: ClientRoots,
        image: Annotated[
            str | None,
            Field(description="The image the mask is for (its size is used): URL, path or data URI."),
        ] = None,
        width: Annotated[int | None, Field(ge=1, le=8192, description="Mask width when no image is given.")] = None,
        height: Annotated[int | None, Field(ge=1, le=8192, description="Mask height when no image is given.")] = None,
        units: Annotated[
            Literal["px", "fraction"],
            Field(description="Shape coordinates in pixels, or 0-1 fractions of the size."),
        ] = "px",
        invert: Annotated[bool, Field(description="Repaint everything except the shapes.")] = False,
        feather: Annotated[
            float,
            Field(
                ge=0,
                le=100,
                description=(
                    "Blur the saved mask's edge by this many pixels (for services taking soft masks; "
                    "image_inpaint sends a black-and-white mask cut at 50% grey)."
                ),
            ),
        ] = 0,
    ) -> Annotated[CallToolResult, image_tools.MaskResult]:
        try:
            mask_spec = MaskSpec(width=width, height=height, shapes=shapes, units=units, invert=invert, feather=feather)
        except ValueError as exc:
            return error_result(f"image_mask: {exc}", money_spent=False)
        return await image_tools.image_mask(ctx.request_context.lifespan_context, mask_spec, image, root_paths(roots))

    @server.tool(
        name="image_convert",
        title="Convert an image",
        description=(
            "Free. Resize (fit contain, cover or exact), crop, change format (PNG, JPEG, WebP, AVIF), compress to "
            "a byte budget (max_bytes) and strip metadata, or make an icon set (favicon.ico with 16/32/48 plus "
            "PNGs 180/192/512), from any local image, URL or data URI. Writes save_as (confined like inputs) or "
            "into X402_OUTPUT_DIR."
        ),
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    )
    async def image_convert(
        ctx: Context[Services, Any],
        image: Annotated[
            str, Field(min_length=1, description="The image: path, file:// URL, http(s) URL or data URI.")
        ],
        roots: ClientRoots,
        save_as: Annotated[
            str | None,
            Field(description="Output file (its extension picks the format), or the folder with icons=true."),
        ] = None,
        overwrite: Annotated[bool, Field(description="Replace existing output files.")] = False,
        icons: Annotated[bool, Field(description="Make the icon set instead of one image.")] = False,
        width: Annotated[int | None, Field(ge=1, le=8192, description="Target width in pixels.")] = None,
        height: Annotated[int | None, Field(ge=1, le=8192, description="Target height in pixels.")] = None,
        fit: Annotated[
            Literal["contain", "cover", "exact"],
            Field(description="contain: inside width x height; cover: fill and crop; exact: stretch."),
        ] = "contain",
        crop: Annotated[Crop | None, Field(description="A region to keep, before resizing.")] = None,
        format: Annotated[
            Literal["PNG", "JPEG", "WEBP", "AVIF"] | None, Field(description="Default: from save_as, else PNG.")
        ] = None,
        quality: Annotated[int, Field(ge=1, le=100, description="JPEG/WebP/AVIF quality.")] = 90,
        max_bytes: Annotated[int | None, Field(ge=1024, description="Largest file wanted.")] = None,
        strip_metadata: Annotated[bool, Field(description="Drop EXIF and the ICC profile.")] = True,
    ) -> Annotated[CallToolResult, image_convert_module.ConvertResult]:
        values: dict[str, Any] = {"width": width, "height": height, "fit": fit, "crop": crop, "quality": quality}
        values |= {"max_bytes": max_bytes, "strip_metadata": strip_metadata}
        if format is not None:
            values["format"] = format
        try:
            convert_spec = ConvertSpec.model_validate(values)
        except ValueError as exc:
            return error_result(f"image_convert: {exc}", money_spent=False)
        return await image_convert_module.image_convert(
            ctx.request_context.lifespan_context,
            image,
            convert_spec,
            save_as=save_as,
            overwrite=overwrite,
            icons=icons,
            roots=root_paths(roots),
        )

    @server.tool(
        name="image_job_status",
        title="Resume an image job",
        description=(
            "Free. Resume a paid image job that was still running when its tool returned: waits for it (up to "
            "X402_WAIT_SECONDS) and returns the image like the tool would. Never pays again."
        ),
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    async def image_job_status(
        ctx: Context[Services, Any],
        roots: ClientRoots,
        job_id: Annotated[str, Field(min_length=1, max_length=200, description="The job_id a paid tool returned.")],
    ) -> Annotated[CallToolResult, ImageResult]:
        progress = ProgressReporter(ctx.report_progress, total=3).stage()
        return await image_tools.image_job_status(
            ctx.request_context.lifespan_context, job_id, progress, caller(ctx), root_paths(roots)
        )

    @server.tool(
        name="image_history",
        title="Image history",
        description=(
            "Free. The versions of one picture, like an editor's history: the paid call that made it, the "
            "image it came from, and every later edit, oldest first."
        ),
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    async def image_history(
        ctx: Context[Services, Any],
        roots: ClientRoots,
        image: Annotated[str | None, Field(description="A result's URL or saved file path.")] = None,
        payment_id: Annotated[int | None, Field(ge=1, description="Or the payment id of a result.")] = None,
    ) -> list[image_tools.HistoryEntry]:
        if image is None and payment_id is None:
            raise ToolError("give image (a result's URL or path) or payment_id")
        try:
            return await image_tools.image_history(
                ctx.request_context.lifespan_context, image, payment_id, root_paths(roots), caller(ctx)
            )
        except InputError as exc:
            raise ToolError(str(exc)) from None


def _register_account_tools(server: FreeTools, paid_names: tuple[str, ...]) -> None:
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
        try:
            status = await account.wallet_status(ctx.request_context.lifespan_context, caller(ctx))
        except X402Error as exc:  # the ledger cannot be read (a PostgreSQL server that is down)
            return error_result(f"wallet_status: {exc}", money_spent=False)
        return CallToolResult(
            content=[TextContent(type="text", text=account.wallet_status_text(status))],
            structured_content=status.model_dump(mode="json"),
        )

    @server.tool(
        name="payment_history",
        title="Payment history",
        description="Free. Your recent payments from the ledger, newest first, with what each bought.",
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    def payment_history(
        ctx: Context[Services, Any],
        limit: Annotated[int, Field(ge=1, le=200, description="How many payments to list.")] = 20,
        tool: Annotated[
            Literal[paid_names] | None,  # type: ignore[valid-type]
            Field(description="Only this tool's payments."),
        ] = None,
    ) -> list[account.PaymentEntry]:
        try:
            return account.payment_history(ctx.request_context.lifespan_context, limit, tool, caller(ctx))
        except X402Error as exc:  # the ledger cannot be read
            raise ToolError(str(exc)) from None

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
        tool: Annotated[Literal[paid_names], Field(description="The paid tool to price.")],  # type: ignore[valid-type]
        arguments: Annotated[dict[str, Any], Field(description="The arguments you would call it with.")],
    ) -> account.QuoteResult:
        services = ctx.request_context.lifespan_context
        progress = ProgressReporter(ctx.report_progress, total=1).stage()
        return await account.quote(services, tool, arguments, progress, caller(ctx))

    @server.tool(
        name="discover_endpoints",
        title="Discover x402 image endpoints",
        description=(
            "Free. Lists image-capable paid HTTP endpoints from the x402 Bazaar discovery API (X402_DISCOVERY_URL): "
            "each one's price in USDC, network, asset, payee and input fields, with a ready [[tool]] entry for the "
            "user's catalog file (X402_CATALOG_FILE). Never calls or pays a listed endpoint; the user adds one to "
            "the catalog file and restarts the server to use it."
        ),
        annotations=FREE_TOOL_ANNOTATIONS,
    )
    async def discover_endpoints(
        ctx: Context[Services, Any],
        query: Annotated[
            str | None, Field(min_length=1, max_length=200, description="Search text, e.g. 'upscale'.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=discovery.MAX_LIMIT, description="How many endpoints to list.")] = 20,
    ) -> Annotated[CallToolResult, discovery.DiscoveryResult]:
        services = ctx.request_context.lifespan_context
        try:
            found = await discovery.discover(services, query=query, limit=limit)
        except discovery.DiscoveryError as exc:
            return error_result(f"discover_endpoints: {exc}", money_spent=False)
        return CallToolResult(
            content=[TextContent(type="text", text=discovery.discovery_text(found))],
            structured_content=found.model_dump(mode="json"),
        )


def build_server(
    settings: Settings,
    *,
    http: "httpx.AsyncClient | None" = None,
    ledger: LedgerStore | None = None,
    token_verifier: TokenVerifier | None = None,
    server_url: str = "http://127.0.0.1",
) -> MCPServer[Services]:
    """The MCP server for `settings`. `http` and `ledger` replace the defaults (tests share them).

    `token_verifier` (the HTTP transports) makes every HTTP request show a bearer token it accepts,
    and names the user each call pays for; `server_url` is where this server is reached.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[Services]) -> AsyncIterator[Services]:
        async with AsyncExitStack() as stack:
            client: httpx.AsyncClient | LazyHttpClient
            if http is not None:
                client = http
            else:
                client = LazyHttpClient(settings)
                stack.push_async_callback(client.aclose)
            services = Services(settings, client, ledger)
            saved_images.ledger = services.ledger
            stack.push_async_callback(services.chain.aclose)
            stack.push_async_callback(services.aclose_public_http)
            if ledger is None:
                stack.callback(services.ledger.close)
            background = await stack.enter_async_context(anyio.create_task_group())
            # Reconciliation runs beside the server: it never delays the start or a call.
            background.start_soon(services.reconciler.run_in_background)
            try:
                yield services
            finally:
                background.cancel_scope.cancel()

    paid = tools_for(settings)
    free = FreeTools()
    _register_image_tools(free)
    _register_account_tools(free, tuple(spec.name for spec in paid))
    saved_images = SavedImages()
    server = ImageServer(
        SERVER_NAME,
        version=__version__,
        instructions=_instructions(settings),
        lifespan=lifespan,
        log_level="WARNING",
        tools=[*(_paid_tool(spec) for spec in paid), *free.tools],
        # The SDK's default policy, with its lifetime named here: the replay guard keeps used tokens as long.
        request_state_security=RequestStateSecurity.ephemeral(ttl=STATE_TTL_SECONDS),
        saved_images=saved_images,
        token_verifier=token_verifier,
        # A resource server only: no OAuth routes are served (there is no resource_server_url), so the
        # issuer is just this server's own address.
        auth=AuthSettings(issuer_url=server_url, resource_server_url=None) if token_verifier else None,
    )
    # Outermost, so it sees the sealed token: `middleware=` would place it inside the request-state boundary.
    server.middleware.insert(0, ApprovalReplayGuard(frozenset(spec.name for spec in paid), ttl=STATE_TTL_SECONDS))
    return server
