"""The paid tools as data: a new endpoint is an entry here, not a new function.

Each entry names the MCP tool, the upstream path it fronts, the input model that mirrors the
upstream schema (types, ranges, defaults, enums), the output model, and its prices. The listed
price is what the provider documents; what a call really costs is what its 402 asks, which is
never paid above the entry's ceiling nor above X402_MAX_PER_CALL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from x402_mcp.config import PATH_PREFIX
from x402_mcp.payments.assets import usdc_to_atomic


def _http_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL of an image the upstream can fetch")
    return value


ImageRef = Annotated[str, Field(min_length=1, max_length=8192), AfterValidator(_http_url)]


class ToolInput(BaseModel):
    """Base of every tool input: unknown fields are an error, never silently forwarded."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ImageGenerateInput(ToolInput):
    prompt: Annotated[
        str, Field(min_length=1, max_length=2000, description="What to draw. Up to 2000 characters.")
    ]
    width: Annotated[
        int,
        Field(
            ge=256, le=2048, description="Width in pixels, 256-2048 (snapped to a multiple of 16 upstream)."
        ),
    ] = 1024
    height: Annotated[
        int,
        Field(
            ge=256, le=2048, description="Height in pixels, 256-2048 (snapped to a multiple of 16 upstream)."
        ),
    ] = 1024
    tier: Annotated[
        Literal["fast", "creative", "anime", "sd35"],
        Field(description="fast (z-image-turbo), creative (chroma), anime (wai-Illustrious), sd35."),
    ] = "fast"
    model: Annotated[
        Literal["z-image-turbo", "chroma", "wai-Illustrious", "venice-sd35"] | None,
        Field(description="Override the tier's model."),
    ] = None
    steps: Annotated[
        int | None, Field(ge=1, le=150, description="Diffusion steps; depends on the model.")
    ] = None
    cfg_scale: Annotated[float | None, Field(ge=0, le=50, description="Classifier-free guidance scale.")] = (
        None
    )
    seed: Annotated[
        int | None, Field(ge=0, le=2**32 - 1, description="Random seed, for reproducible images.")
    ] = None
    negative_prompt: Annotated[
        str | None, Field(max_length=2000, description="What to keep out of the image.")
    ] = None


class ImageEditInput(ToolInput):
    image: Annotated[ImageRef, Field(description="The image to edit: an http(s) URL.")]
    prompt: Annotated[
        str,
        Field(min_length=1, max_length=2000, description="The edit instruction, e.g. 'make the sky stormy'."),
    ]
    model: Annotated[
        str | None, Field(max_length=100, description="Edit model; default 'nano-banana-pro'.")
    ] = None


class ImageInpaintInput(ToolInput):
    image: Annotated[ImageRef, Field(description="The source image: an http(s) URL.")]
    mask: Annotated[
        ImageRef, Field(description="The mask: an http(s) URL of an image, white = repaint, black = keep.")
    ]
    prompt: Annotated[
        str,
        Field(min_length=1, max_length=2000, description="What to paint into the white region of the mask."),
    ]
    model: Annotated[
        str | None, Field(max_length=100, description="Inpaint model; default 'gpt-image-2'.")
    ] = None


class PaymentInfo(BaseModel):
    """What a call paid, from the challenge we signed and the server's settlement receipt."""

    amount_usdc: str = Field(description="Amount paid in USDC, exact decimal, e.g. '0.02'.")
    amount_atomic: str = Field(description="Amount in the token's atomic units (USDC has 6 decimals).")
    asset: str = Field(description="Token contract address (USDC).")
    network: str = Field(description="Chain the payment is on: base or base-sepolia.")
    pay_to: str = Field(description="Address that received the payment.")
    payer: str = Field(description="Address of the paying wallet.")
    transaction: str | None = Field(description="Settlement transaction hash, when the receipt gives one.")
    x402_version: int = Field(description="x402 protocol version of the exchange.")
    settled: bool | None = Field(
        description="True if the receipt confirms settlement; None if none was sent."
    )


class ImageResult(BaseModel):
    """The upstream's answer (its fields pass through) plus the payment receipt."""

    model_config = ConfigDict(extra="allow")

    image_url: str = Field(description="URL of the resulting PNG.")
    model: str | None = Field(None, description="Model that produced the image.")
    prompt: str | None = Field(None, description="Prompt the model received.")
    venice_request_id: str | None = Field(None, description="Upstream request id, for support.")
    source: str | None = Field(None, description="Upstream provider tag.")
    payment: PaymentInfo | None = Field(None, description="What this call paid; null if it was free.")


class ImageGenerateResult(ImageResult):
    width: str | int | None = Field(None, description="Width of the image in pixels.")
    height: str | int | None = Field(None, description="Height of the image in pixels.")
    tier: str | None = Field(None, description="Tier used.")
    seed: int | None = Field(None, description="Seed used; pass it again to reproduce the image.")
    elapsed_ms: float | None = Field(None, description="Upstream generation time in milliseconds.")


@dataclass(frozen=True)
class ToolSpec:
    """One paid tool: an MCP tool name in front of one upstream x402 endpoint."""

    name: str
    title: str
    path: str
    summary: str
    input_model: type[ToolInput]
    output_model: type[ImageResult]
    listed_price: Decimal
    price_ceiling: Decimal
    #: MCP argument name -> upstream field name, where they differ.
    wire_names: dict[str, str] = field(default_factory=dict)

    @property
    def path_variable(self) -> str:
        return PATH_PREFIX + self.name.upper()

    @property
    def price_ceiling_atomic(self) -> int:
        return usdc_to_atomic(self.price_ceiling)

    @property
    def description(self) -> str:
        return (
            f"{self.summary} Costs about ${self.listed_price} USDC per call, paid automatically from the "
            f"configured wallet over x402 (never more than ${self.price_ceiling} for this tool, nor above "
            "X402_MAX_PER_CALL). Returns the image URL, its metadata and the payment receipt."
        )

    def upstream_body(self, arguments: ToolInput) -> dict[str, Any]:
        """The JSON the upstream receives: only its own fields, unset optionals left out."""
        data = arguments.model_dump(exclude_none=True)
        return {self.wire_names.get(key, key): value for key, value in data.items()}


CATALOG: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="image_generate",
        title="Generate an image",
        path="image-generate",
        summary=(
            "Generate an image from a text prompt (fast text-to-image; tiers fast, creative, anime, sd35; "
            "256-2048 px)."
        ),
        input_model=ImageGenerateInput,
        output_model=ImageGenerateResult,
        listed_price=Decimal("0.01"),
        price_ceiling=Decimal("0.05"),
    ),
    ToolSpec(
        name="image_edit",
        title="Edit an image",
        path="image-edit",
        summary="Edit an image by instruction, without a mask (e.g. 'turn it into a watercolor').",
        input_model=ImageEditInput,
        output_model=ImageResult,
        listed_price=Decimal("0.02"),
        price_ceiling=Decimal("0.10"),
        wire_names={"image": "image_url"},
    ),
    ToolSpec(
        name="image_inpaint",
        title="Inpaint an image region",
        path="image-inpaint",
        summary=(
            "Repaint the masked region of an image from a prompt (white = repaint, black = keep): "
            "object replacement, removal, generative fill."
        ),
        input_model=ImageInpaintInput,
        output_model=ImageResult,
        listed_price=Decimal("0.02"),
        price_ceiling=Decimal("0.10"),
        wire_names={"image": "image_url", "mask": "mask_url"},
    ),
)


def spec(name: str) -> ToolSpec:
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(name)
