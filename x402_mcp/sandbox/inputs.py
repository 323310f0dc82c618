"""Validation of the JSON inputs of each route, and loading of input images (loopback only)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 10.0

GENERATE_TIERS: dict[str, str] = {
    "fast": "z-image-turbo",
    "creative": "chroma",
    "anime": "wai-Illustrious",
    "sd35": "venice-sd35",
}
GENERATE_MODELS = frozenset(GENERATE_TIERS.values())
PRO_TIERS: dict[str, str] = {
    "balanced": "flux-2-pro",
    "recraft": "recraft-v3",
    "seedream": "seedream-v4",
    "grok": "grok-imagine",
    "qwen": "qwen-image",
}
EDIT_DEFAULT_MODEL = "nano-banana-pro"
INPAINT_DEFAULT_MODEL = "gpt-image-2"

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class InputError(Exception):
    """A bad request field: answered 400, never settled."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class GenerateInput:
    prompt: str
    width: int
    height: int
    tier: str
    model: str
    seed: int


@dataclass(frozen=True)
class EditInput:
    prompt: str
    image_url: str
    mask_url: str | None
    model: str


@dataclass(frozen=True)
class RemoveBgInput:
    image_url: str


def require_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else None
    except ValueError:
        raise InputError("body", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError("body", "request body must be a JSON object")
    return data


def _required(data: dict[str, Any], key: str, max_len: int | None = None) -> str:
    value = _optional(data, key, max_len)
    if value is None:
        raise InputError(key, f"'{key}' is required")
    return value


def _optional(data: dict[str, Any], key: str, max_len: int | None = None) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(key, f"'{key}' must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise InputError(key, f"'{key}' is longer than {max_len} characters")
    return value


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(key, f"'{key}' must be a number")
    return float(value)


def _dimension(data: dict[str, Any], key: str) -> int:
    value = _number(data, key)
    if value is None:
        return 1024
    if not 256 <= value <= 2048:
        raise InputError(key, f"'{key}' must be between 256 and 2048, got {value:g}")
    # Snap to a multiple of 16 as the upstream does, staying inside the range.
    return min(2048, max(256, round(value / 16) * 16))


def parse_generate(data: dict[str, Any], *, pro: bool) -> GenerateInput:
    prompt = _required(data, "prompt", max_len=3000 if pro else 2000)
    tiers = PRO_TIERS if pro else GENERATE_TIERS
    default_tier = "balanced" if pro else "fast"
    tier = _optional(data, "tier") or default_tier
    if tier not in tiers:
        raise InputError("tier", f"'tier' must be one of {sorted(tiers)}")
    model = _optional(data, "model", max_len=100) or tiers[tier]
    if not pro and model not in GENERATE_MODELS:
        raise InputError("model", f"'model' must be one of {sorted(GENERATE_MODELS)}")
    for key in ("steps", "cfg_scale"):
        _number(data, key)
    _optional(data, "negative_prompt")
    seed_value = _number(data, "seed")
    if seed_value is not None and (seed_value != int(seed_value) or seed_value < 0):
        raise InputError("seed", "'seed' must be a non-negative integer")
    seed = int(seed_value) if seed_value is not None else random.randint(0, 2**31 - 1)
    return GenerateInput(
        prompt=prompt,
        width=_dimension(data, "width"),
        height=_dimension(data, "height"),
        tier=tier,
        model=model,
        seed=seed,
    )


def parse_edit(data: dict[str, Any], *, with_mask: bool) -> EditInput:
    image_url = _required(data, "image_url")
    mask_url = _required(data, "mask_url") if with_mask else None
    prompt = _required(data, "prompt", max_len=3000)
    default_model = INPAINT_DEFAULT_MODEL if with_mask else EDIT_DEFAULT_MODEL
    model = _optional(data, "model", max_len=100) or default_model
    check_image_url("image_url", image_url)
    if mask_url is not None:
        check_image_url("mask_url", mask_url)
    return EditInput(prompt=prompt, image_url=image_url, mask_url=mask_url, model=model)


def parse_remove_bg(data: dict[str, Any]) -> RemoveBgInput:
    image_url = _required(data, "image_url")
    check_image_url("image_url", image_url)
    return RemoveBgInput(image_url=image_url)


def check_image_url(field: str, url: str) -> None:
    """Accept only data:image URIs and loopback http(s) URLs: the sandbox never reaches the internet."""
    if url.startswith("data:"):
        if not url[5:].lower().startswith("image/") or ";base64," not in url:
            raise InputError(field, f"'{field}' data URI must be data:image/...;base64,...")
        return
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InputError(field, f"'{field}' is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not _is_loopback(parsed.host):
        raise InputError(
            field, f"'{field}' must be a data:image URI or an http URL on loopback (the sandbox is offline)"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def load_image_bytes(field: str, url: str, client: httpx.AsyncClient) -> bytes:
    """The raw bytes behind an image reference already accepted by `check_image_url`."""
    if url.startswith("data:"):
        payload = url.split(";base64,", 1)[1]
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(field, f"'{field}' data URI is not valid base64") from None
    else:
        data = await _fetch(field, url, client)
    if not data:
        raise InputError(field, f"'{field}' is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(field, f"'{field}' is larger than {MAX_IMAGE_BYTES} bytes")
    return data


async def _fetch(field: str, url: str, client: httpx.AsyncClient) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise InputError(field, f"'{field}' answered HTTP {resp.status_code}")
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise InputError(field, f"'{field}' is larger than {MAX_IMAGE_BYTES} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise InputError(field, f"'{field}' could not be fetched ({type(exc).__name__})") from None
    return b"".join(chunks)


def image_fetch_client() -> httpx.AsyncClient:
    # No redirects (one could lead off loopback) and no proxy from the environment.
    return httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False)
