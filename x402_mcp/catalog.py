"""The paid tools as data: a new endpoint is an entry here, not a new function.

Each entry names the MCP tool, the upstream path it fronts, the input model that mirrors the
upstream schema (types, ranges, defaults, enums), the output model, and its prices. The listed
price is what the provider documents; what a call really costs is what its 402 asks, which is
never paid above the entry's ceiling nor above X402_MAX_PER_CALL.

Image inputs are named `image` and `mask` and accept more than URLs (a local path, a file://
URL, a data URI); they reach the upstream as its `image_url` / `mask_url`. Fields listed in a
model's LOCAL_FIELDS steer this server (saving, mask handling) and are never sent upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from x402_mcp.config import PATH_PREFIX, Settings
from x402_mcp.payments.assets import usdc_to_atomic

_IMAGE_FORMS = (
    "an http(s) URL, a local file path (inside the working directory, X402_INPUT_ROOTS or the client's "
    "roots), a file:// URL, or a data URI"
)


def _image_ref(what: str) -> Any:
    return Field(min_length=1, max_length=40_000_000, description=f"{what}: {_IMAGE_FORMS}.")


Prompt = Annotated[str, Field(min_length=1, max_length=2000)]
Seed = Annotated[int | None, Field(ge=0, le=2**32 - 1, description="Random seed, for reproducible images.")]
NegativePrompt = Annotated[str | None, Field(max_length=2000, description="What to keep out of the image.")]
Save = Annotated[
    bool,
    Field(description="Download the result into X402_OUTPUT_DIR and return a preview (false: only the URL)."),
]


SaveAs = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=4096,
        description=(
            "Write the final image to this file instead of X402_OUTPUT_DIR: a path relative to the working "
            "directory or inside X402_INPUT_ROOTS / the client's roots. The extension picks the format: "
            ".png, .jpg/.jpeg, .webp, or .avif where supported. Checked before paying."
        ),
    ),
]
Overwrite = Annotated[bool, Field(description="Replace an existing save_as file (otherwise refused before paying).")]


class ToolInput(BaseModel):
    """Base of every tool input: unknown fields are an error, never silently forwarded."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    #: Fields for this server only, never sent upstream.
    LOCAL_FIELDS: ClassVar[frozenset[str]] = frozenset({"save", "save_as", "overwrite"})

    save: Save = True
    save_as: SaveAs = None
    overwrite: Overwrite = False

    @model_validator(mode="after")
    def _save_as_saves(self) -> ToolInput:
        if self.save_as is not None and not self.save:
            raise ValueError("save_as needs save=true (save=false returns only the URL)")
        return self

    def upstream_fields(self) -> dict[str, Any]:
        """The fields the upstream receives (before its image fields are added): unset optionals left out."""
        return {key: value for key, value in self.model_dump(exclude_none=True).items() if key not in self.LOCAL_FIELDS}


AspectRatio = Literal["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9"]
#: The generate endpoints' size range; sizes are multiples of 16 there.
MIN_SIDE, MAX_SIDE, SIZE_STEP, DEFAULT_LONG_SIDE = 256, 2048, 16, 1024


def _snap(value: float) -> int:
    return max(SIZE_STEP, int(value / SIZE_STEP + 0.5) * SIZE_STEP)  # halves round up


def size_for_aspect(ratio: str, width: int | None, height: int | None) -> tuple[int, int]:
    """Width and height for `ratio`: long side 1024, or from the one side given; both must agree.

    Raises ValueError naming the field (pydantic reports it as an invalid input, before paying).
    """
    across, down = (int(part) for part in ratio.split(":"))
    if width is not None and height is not None:
        if abs(width * down / across - height) > SIZE_STEP:
            raise ValueError(
                f"aspect_ratio {ratio} disagrees with width {width} and height {height}: give aspect_ratio with "
                "one of them (or neither), or width and height alone"
            )
        return width, height
    if width is not None:
        size = (width, _snap(width * down / across))
    elif height is not None:
        size = (_snap(height * across / down), height)
    elif across >= down:
        size = (DEFAULT_LONG_SIDE, _snap(DEFAULT_LONG_SIDE * down / across))
    else:
        size = (_snap(DEFAULT_LONG_SIDE * across / down), DEFAULT_LONG_SIDE)
    for name, value in zip(("width", "height"), size, strict=True):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValueError(
                f"aspect_ratio {ratio} makes {name} {value}, outside {MIN_SIDE}-{MAX_SIDE}: give another width or "
                "height"
            )
    return size


class GenerateInput(ToolInput):
    """What the generate tools share: a size given as width/height or as an aspect ratio."""

    LOCAL_FIELDS: ClassVar[frozenset[str]] = ToolInput.LOCAL_FIELDS | {"aspect_ratio", "n"}

    width: Annotated[
        int,
        Field(ge=256, le=2048, description="Width in pixels, 256-2048 (snapped to a multiple of 16 upstream)."),
    ] = 1024
    height: Annotated[
        int,
        Field(ge=256, le=2048, description="Height in pixels, 256-2048 (snapped to a multiple of 16 upstream)."),
    ] = 1024
    aspect_ratio: Annotated[
        AspectRatio | None,
        Field(
            description=(
                "Shape of the image; sets width/height (multiples of 16, long side 1024 unless width or height "
                "is given). With both width and height they must agree."
            )
        ),
    ] = None
    n: Annotated[
        int,
        Field(
            ge=1,
            le=4,
            description=(
                "How many variants: n paid calls, checked against every limit and approved once for the total "
                "before the first is paid. With a seed, variant i uses seed + i. save_as names get -1, -2, ..."
            ),
        ),
    ] = 1

    @model_validator(mode="after")
    def _apply_aspect_ratio(self) -> GenerateInput:
        if self.aspect_ratio is not None:
            given = self.model_fields_set
            self.width, self.height = size_for_aspect(
                self.aspect_ratio,
                self.width if "width" in given else None,
                self.height if "height" in given else None,
            )
        return self


class ImageGenerateInput(GenerateInput):
    prompt: Annotated[str, Field(min_length=1, max_length=2000, description="What to draw. Up to 2000 characters.")]
    tier: Annotated[
        Literal["fast", "creative", "anime", "sd35"],
        Field(description="fast (z-image-turbo), creative (chroma), anime (wai-Illustrious), sd35."),
    ] = "fast"
    model: Annotated[
        Literal["z-image-turbo", "chroma", "wai-Illustrious", "venice-sd35"] | None,
        Field(description="Override the tier's model."),
    ] = None
    steps: Annotated[int | None, Field(ge=1, le=150, description="Diffusion steps; depends on the model.")] = None
    cfg_scale: Annotated[float | None, Field(ge=0, le=50, description="Classifier-free guidance scale.")] = None
    seed: Seed = None
    negative_prompt: NegativePrompt = None


class ImageGenerateProInput(GenerateInput):
    prompt: Annotated[str, Field(min_length=1, max_length=3000, description="What to draw. Up to 3000 characters.")]
    tier: Annotated[
        Literal["balanced", "recraft", "seedream", "grok", "qwen"],
        Field(description="balanced (flux-2-pro), recraft, seedream, grok (xAI Grok Imagine), qwen (Qwen Image 2)."),
    ] = "balanced"
    model: Annotated[str | None, Field(max_length=100, description="Override the tier's model.")] = None
    steps: Annotated[int | None, Field(ge=1, le=150, description="Diffusion steps; depends on the model.")] = None
    cfg_scale: Annotated[float | None, Field(ge=0, le=50, description="Classifier-free guidance scale.")] = None
    seed: Seed = None
    negative_prompt: NegativePrompt = None


class ImageEditInput(ToolInput):
    image: Annotated[str, _image_ref("The image to edit")]
    prompt: Annotated[Prompt, Field(description="The edit instruction, e.g. 'make the sky stormy'.")]
    model: Annotated[str | None, Field(max_length=100, description="Edit model; default 'nano-banana-pro'.")] = None
    negative_prompt: NegativePrompt = None
    seed: Seed = None


InpaintMode = Literal["replace", "remove", "add"]
DEFAULT_REMOVE_FILL = "the background matching the surroundings"


def inpaint_prompt(mode: InpaintMode, prompt: str | None) -> str:
    """What the model is told for each mode: replace sends the prompt as it is."""
    if mode == "remove":
        return (
            f"Remove what is in the masked region and fill it with {prompt or DEFAULT_REMOVE_FILL}, "
            "continuing the surrounding image seamlessly."
        )
    assert prompt is not None  # required for replace and add (checked by the model)
    if mode == "add":
        return f"Add {prompt} in the masked region, matching the scene's lighting, perspective and style."
    return prompt


class ImageInpaintInput(ToolInput):
    LOCAL_FIELDS: ClassVar[frozenset[str]] = ToolInput.LOCAL_FIELDS | {
        "mask_convention",
        "allow_full_mask",
        "preserve_unmasked",
        "mask_blur",
        "crop_to_mask",
        "padding",
        "mode",
    }

    image: Annotated[str, _image_ref("The source image")]
    mask: Annotated[
        str,
        _image_ref(
            "The mask, white = repaint and black = keep (see mask_convention); resized to the image if needed. "
            "Build one from rectangles, ellipses or polygons with the free image_mask tool. Give it as"
        ),
    ]
    prompt: Annotated[
        Prompt | None,
        Field(
            description=(
                "What to paint into the masked region (replace), the new object (add), or what fills the "
                f"removed region (remove; default '{DEFAULT_REMOVE_FILL}'). Required except for remove."
            )
        ),
    ] = None
    model: Annotated[str | None, Field(max_length=100, description="Inpaint model; default 'gpt-image-2'.")] = None
    negative_prompt: NegativePrompt = None
    seed: Seed = None
    mask_convention: Annotated[
        Literal["white", "black", "alpha"],
        Field(description="Which mask pixels mean repaint: white (default), black, or alpha (transparent)."),
    ] = "white"
    allow_full_mask: Annotated[
        bool,
        Field(description="Allow a mask that repaints the whole image (otherwise refused as a likely mistake)."),
    ] = False
    mode: Annotated[
        InpaintMode,
        Field(description="replace (default): paint the prompt there; remove: erase what is there; add: a new object."),
    ] = "replace"
    preserve_unmasked: Annotated[
        bool,
        Field(
            description=(
                "Paste the model's result onto the source through the mask, so every pixel outside the feathered "
                "mask stays exactly the source's (models repaint the whole picture). The result keeps the "
                "source's size either way."
            )
        ),
    ] = True
    mask_blur: Annotated[
        float, Field(ge=0, le=64, description="Feather of the mask's edge in pixels when pasting back (0 = hard).")
    ] = 4
    crop_to_mask: Annotated[
        bool,
        Field(
            description=(
                "Send only the mask's bounding box plus padding (scaled down to what the endpoint takes) and "
                "paste the result back: more detail on big images, a smaller upload."
            )
        ),
    ] = False
    padding: Annotated[
        int, Field(ge=0, le=1024, description="Pixels of context around the mask's box with crop_to_mask.")
    ] = 32

    @model_validator(mode="after")
    def _prompt_for_mode(self) -> ImageInpaintInput:
        if self.prompt is None and self.mode != "remove":
            raise ValueError(f"prompt is required with mode '{self.mode}' (only mode 'remove' has a default)")
        return self

    def upstream_fields(self) -> dict[str, Any]:
        return {**super().upstream_fields(), "prompt": inpaint_prompt(self.mode, self.prompt)}


class RemoveBgInput(ToolInput):
    image: Annotated[str, _image_ref("The image whose background to remove")]


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
        description="True if a receipt or the chain confirms settlement; False if the upstream says it did not "
        "settle (its word: the payment still counts until the authorization expires unused); None if unknown."
    )
    payment_id: int | None = Field(None, description="The payment's row in the local ledger.")
    status: str | None = Field(
        None, description="The ledger's status: signed, unknown, declined, settled or expired (see the README)."
    )
    authorization_expires: str | None = Field(
        None, description="When the signed authorization stops being usable (UTC); it counts until resolved."
    )
    payment_identifier: str | None = Field(
        None, description="The payment's id (x402 payment-identifier): a re-sent payment carries the same id."
    )


class SavedFile(BaseModel):
    path: str = Field(description="Where the result was saved.")
    sha256: str
    bytes: int
    width: int
    height: int
    mime_type: str
    preview_width: int
    preview_height: int
    preview_bytes: int


class JobStatus(BaseModel):
    job_id: str
    status: str
    status_url: str | None = None


class ImageResult(BaseModel):
    """The upstream's answer (its fields pass through) plus the saved file and the payment receipt."""

    model_config = ConfigDict(extra="allow")

    image_url: str | None = Field(description="URL of the resulting image; null while a job is still running.")
    model: str | None = Field(None, description="Model that produced the image.")
    prompt: str | None = Field(None, description="Prompt the model received.")
    venice_request_id: str | None = Field(None, description="Upstream request id, for support.")
    source: str | None = Field(None, description="Upstream provider tag.")
    saved: SavedFile | None = Field(None, description="The downloaded file; null with save=false or on failure.")
    save_error: str | None = Field(None, description="Why the result could not be saved (the URL still works).")
    job: JobStatus | None = Field(None, description="The upstream job, for asynchronous endpoints.")
    parent_payment_id: int | None = Field(None, description="The payment that made the input image, if ours.")
    notes: list[str] = Field(
        default_factory=list, description="What this server did with the inputs or the result (e.g. composited)."
    )
    payment: PaymentInfo | None = Field(None, description="What this call paid; null if it was free.")


class ImageGenerateResult(ImageResult):
    width: str | int | None = Field(None, description="Width of the image in pixels.")
    height: str | int | None = Field(None, description="Height of the image in pixels.")
    tier: str | None = Field(None, description="Tier used.")
    seed: int | None = Field(None, description="Seed used; pass it again to reproduce the image.")
    elapsed_ms: float | None = Field(None, description="Upstream generation time in milliseconds.")
    variants: list[dict[str, Any]] | None = Field(
        None, description="With n > 1: every variant's result (file, payment); the fields above are the first's."
    )


@dataclass(frozen=True)
class JobSpec:
    """How an asynchronous endpoint answers: a job id, and where to ask how the job is doing."""

    id_field: str = "job_id"
    status_url_field: str = "status_url"
    #: Used when the answer has no status URL: a path under the base URL, with {job_id}.
    status_path: str | None = None
    done: frozenset[str] = frozenset({"succeeded", "success", "completed", "done"})
    failed: frozenset[str] = frozenset({"failed", "error", "cancelled", "canceled"})


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
    #: MCP argument name -> upstream field name, for the image inputs.
    image_fields: dict[str, str] = field(default_factory=dict)
    #: The endpoint takes data URIs for images (else local inputs are uploaded).
    data_uri_inputs: bool = False
    #: Set when the endpoint answers with a job to poll; any answer shaped like one is polled anyway.
    job: JobSpec | None = None
    #: The only payees of this tool, when its entry names them (the user catalog's `pay_to`).
    pay_to: frozenset[str] | None = None
    #: Where the answer holds the image URL: a field name, or a dotted path such as `data.0.url`.
    result_field: str = "image_url"

    def with_image_url(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The answer with its image URL under `image_url`, where the rest of the money path reads it."""
        if self.result_field == "image_url" or "image_url" in answer:
            return answer
        found: Any = answer
        for part in self.result_field.split("."):
            if isinstance(found, dict):
                found = found.get(part)
            elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
                found = found[int(part)]
            else:
                return answer
        return {**answer, "image_url": found} if isinstance(found, str) else answer

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
            "X402_MAX_PER_CALL). Returns the image URL, a preview, the saved file and the payment receipt."
        )

    def upstream_body(self, arguments: ToolInput, images: dict[str, str]) -> dict[str, Any]:
        """The JSON the upstream receives: its own fields, unset optionals left out.

        `images` maps each image argument to what the endpoint receives for it (a URL or data URI).
        """
        # Image arguments leave only as `images` says (checked and converted), never as the caller wrote
        # them: dropped by argument name and by upstream name (a catalog input's send_as alias).
        wire_names = set(self.image_fields.values())
        body = {
            key: value
            for key, value in arguments.upstream_fields().items()
            if key not in self.image_fields and key not in wire_names
        }
        for argument, wire in self.image_fields.items():
            if argument in images:
                body[wire] = images[argument]
        return body


CATALOG: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="image_generate",
        title="Generate an image",
        path="image-generate",
        summary=(
            "Generate an image from a text prompt (fast text-to-image; tiers fast, creative, anime, sd35; 256-2048 px)."
        ),
        input_model=ImageGenerateInput,
        output_model=ImageGenerateResult,
        listed_price=Decimal("0.01"),
        price_ceiling=Decimal("0.05"),
    ),
    ToolSpec(
        name="image_generate_pro",
        title="Generate a premium image",
        path="image-generate-pro",
        summary=(
            "Generate a high-quality image from a text prompt (premium models: Flux 2 Pro, Recraft, Seedream, "
            "Grok Imagine, Qwen Image 2; up to 3000 characters)."
        ),
        input_model=ImageGenerateProInput,
        output_model=ImageGenerateResult,
        listed_price=Decimal("0.06"),
        price_ceiling=Decimal("0.12"),
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
        image_fields={"image": "image_url"},
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
        image_fields={"image": "image_url", "mask": "mask_url"},
    ),
    ToolSpec(
        name="remove_bg",
        title="Remove an image's background",
        path="remove-bg",
        summary="Remove the background of an image, leaving the subject on transparency.",
        input_model=RemoveBgInput,
        output_model=ImageResult,
        listed_price=Decimal("0.08"),
        price_ceiling=Decimal("0.10"),
        image_fields={"image": "image_url"},
    ),
)


def tools_for(settings: Settings) -> tuple[ToolSpec, ...]:
    """The built-in tools, then the user's own from X402_CATALOG_FILE (checked when settings load)."""
    if settings.catalog_file is None:
        return CATALOG
    from x402_mcp.user_catalog import load_user_catalog

    return CATALOG + load_user_catalog(settings.catalog_file)


def spec(name: str, settings: Settings | None = None) -> ToolSpec:
    for entry in tools_for(settings) if settings is not None else CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(name)
