"""Free discovery of x402 image endpoints from a facilitator's Bazaar listing. Never pays, never calls them.

GET {X402_DISCOVERY_URL}?type=http&limit=&offset= (or `/discovery/search?query=` when a query is
given) answers `{"items": [{"resource", "type", "x402Version", "accepts": [...], ...}],
"pagination": {"limit", "offset", "total"}}`. The answer comes from a peer we do not control:
every field is optional and type-checked, malformed items are skipped and counted, the body is
capped (net.send), and so are the pages read and the items kept. Each image-capable resource is
shown with its price, network, asset, payee and input fields, and a `[[tool]]` entry the user
can paste into the catalog file (X402_CATALOG_FILE); only then can it be paid.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from x402_mcp.catalog import CATALOG, ToolInput
from x402_mcp.config import is_loopback_host
from x402_mcp.payments.assets import USDC, format_usdc, network_named
from x402_mcp.user_catalog import FREE_TOOL_NAMES

if TYPE_CHECKING:
    from x402_mcp.services import Services

#: The catalog file's rule for input names (x402_mcp/user_catalog.py), so every entry made here loads.
INPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_LIMIT = 100
#: Pages read per discovery, whatever the listing's pagination says.
MAX_PAGES = 10
PAGE_SIZE = 100
#: Items looked at per page: a page claiming more is cut here.
MAX_ITEMS_PER_PAGE = 1000
MAX_TEXT = 500
MAX_INPUT_FIELDS = 50
_IMAGE_WORDS = re.compile(r"\bimages?\b|image[-_/ ]|upscal|\bpng\b|\bjpe?g\b|\bwebp\b", re.IGNORECASE)
_INPUT_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}


class DiscoveryError(Exception):
    """The listing could not be read; the message says what to do next."""


class InputField(BaseModel):
    name: str
    type: str = Field(description="string, integer, number, boolean, or image (an image URL the upstream takes).")
    required: bool = False
    description: str | None = None
    enum: list[str | int | float] | None = None


class DiscoveredEndpoint(BaseModel):
    resource: str = Field(description="The endpoint's URL (not called by discovery).")
    description: str | None = None
    x402_version: int | None = None
    price_usdc: str | None = Field(description="Asked price in USDC; null when the asset is not a known USDC.")
    amount_atomic: str = Field(description="Asked amount in the asset's atomic units.")
    network: str
    asset: str | None = None
    pay_to: str | None = None
    mime_type: str | None = None
    method: str | None = None
    inputs: list[InputField] = Field(default_factory=list)
    catalog_entry: str = Field(description="A [[tool]] entry for X402_CATALOG_FILE; review it before adding it.")


class DiscoveryResult(BaseModel):
    source: str = Field(description="The discovery service's origin.")
    query: str | None = None
    endpoints: list[DiscoveredEndpoint]
    scanned: int = Field(description="Items read from the listing.")
    skipped_malformed: int = Field(description="Items skipped because they were not well-formed.")
    pages: int
    note: str = "Discovery never calls or pays an endpoint: add one to X402_CATALOG_FILE and restart to use it."


def _text(value: Any) -> str | None:
    return value.strip()[:MAX_TEXT] if isinstance(value, str) and value.strip() else None


def _amount(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 30 and int(value) > 0:
        return int(value)
    return None


def _http_url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 2000:
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def _is_image(item: dict[str, Any], accept: dict[str, Any]) -> bool:
    mime = accept.get("mimeType")
    if isinstance(mime, str) and mime.lower().startswith("image/"):
        return True
    hints = [accept.get("description"), item.get("resource"), accept.get("resource")]
    output = accept.get("outputSchema")
    if isinstance(output, dict):
        hints.append(json.dumps(output.get("output"))[:4000])
    metadata = item.get("metadata")
    if isinstance(metadata, dict):
        hints.append(json.dumps(metadata)[:4000])
    return any(isinstance(hint, str) and _IMAGE_WORDS.search(hint) for hint in hints)


def _field(name: Any, spec: Any, required: bool) -> InputField | None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}", name):
        return None
    spec = spec if isinstance(spec, dict) else {}
    kind = _INPUT_TYPES.get(str(spec.get("type", "string")).lower(), "string")
    lowered = name.lower()
    if kind == "string" and "image" in lowered and ("url" in lowered or lowered == "image"):
        kind = "image"
    enum = spec.get("enum")
    choices = None
    if isinstance(enum, list) and 0 < len(enum) <= 50:
        choices = [v for v in enum if isinstance(v, str | int | float) and not isinstance(v, bool)]
        if len(choices) != len(enum) or len({type(v) for v in choices}) != 1:
            choices = None
    return InputField(
        name=name,
        type=kind,
        required=bool(spec.get("required") is True or required),
        description=_text(spec.get("description")),
        enum=choices,
    )


def _input_fields(item: dict[str, Any], accept: dict[str, Any]) -> tuple[str | None, list[InputField]]:
    """The method and input fields: v1 outputSchema.input, or v2 extensions.bazaar (its schema, else its info)."""
    fields: list[InputField] = []
    v1 = _table(_dig(accept, "outputSchema", "input"))
    bazaar = _table(_dig(item, "extensions", "bazaar"))
    info_input = _table(_dig(bazaar, "info", "input"))
    body = _table(_dig(bazaar, "schema", "properties", "input", "properties", "body"))
    if v1:
        method = _text(v1.get("method"))
        for key in ("bodyFields", "queryParams"):
            fields += [f for n, s in _table(v1.get(key)).items() if (f := _field(n, s, False)) is not None]
    else:
        method = _text(info_input.get("method"))
        properties = _table(body.get("properties"))
        if properties:
            required = body.get("required")
            required = required if isinstance(required, list) else []
            fields += [f for n, s in properties.items() if (f := _field(n, s, n in required)) is not None]
        else:  # only an example of the input: its values give the types
            for key in ("body", "queryParams"):
                example = _table(info_input.get(key)).items()
                fields += [f for n, v in example if (f := _field(n, {"type": _json_type(v)}, False)) is not None]
    unique = {field.name: field for field in fields}
    return method, list(unique.values())[:MAX_INPUT_FIELDS]


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _endpoint(item: Any) -> DiscoveredEndpoint | None:
    """One listing item as an endpoint, or None when it is malformed or not image-capable."""
    if not isinstance(item, dict):
        return None
    resource = _http_url(item.get("resource"))
    accepts = item.get("accepts")
    if resource is None or not isinstance(accepts, list) or item.get("type", "http") != "http":
        return None
    version = item.get("x402Version")
    version = version if isinstance(version, int) and not isinstance(version, bool) else None
    for accept in accepts[:20]:
        if not isinstance(accept, dict) or accept.get("scheme", "exact") != "exact":
            continue
        amount = _amount(accept.get("maxAmountRequired", accept.get("amount")))
        network_name = _text(accept.get("network"))
        if amount is None or network_name is None:
            continue
        if not _is_image(item, accept):
            return None
        return _described(item, accept, resource, version, amount, network_name)
    return None


def _described(
    item: dict[str, Any], accept: dict[str, Any], resource: str, version: int | None, amount: int, network_name: str
) -> DiscoveredEndpoint:
    asset = _text(accept.get("asset"))
    network = network_named(network_name)  # shown either way; only the payer is strict about spellings
    usdc = USDC.get(network.chain_id) if network is not None else None
    is_usdc = usdc is not None and asset is not None and asset.lower() == usdc.address.lower()
    method, inputs = _input_fields(item, accept)
    pay_to = _text(accept.get("payTo"))
    description = _text(accept.get("description")) or _text(_dig(item, "metadata", "description"))
    endpoint = DiscoveredEndpoint(
        resource=resource,
        description=description,
        x402_version=version,
        price_usdc=format_usdc(amount) if is_usdc else None,
        amount_atomic=str(amount),
        network=network.name if network is not None else network_name,
        asset=asset,
        pay_to=pay_to,
        mime_type=_text(accept.get("mimeType")),
        method=method,
        inputs=inputs,
        catalog_entry="",
    )
    return endpoint


def _toml_string(value: str) -> str:
    # A JSON string without \u escapes (ensure_ascii off) is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def tool_name_for(resource: str) -> str:
    """A catalog tool name from the resource's path, e.g. https://x.com/v1/upscale -> upscale."""
    parts = [part for part in urlsplit(resource).path.split("/") if part]
    base = re.sub(r"[^a-z0-9]+", "_", (parts[-1] if parts else urlsplit(resource).hostname or "").lower()).strip("_")
    name = base if base[:1].isalpha() else f"x402_{base}"
    return (name if len(name) >= 3 else f"x402_{name}".rstrip("_"))[:64]


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`…: not a built-in's nor a free tool's name, nor one already given."""
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base[:60]}_{number}"
    taken.add(name)
    return name


def catalog_entry(endpoint: DiscoveredEndpoint, name: str) -> str:
    """A [[tool]] entry for the catalog file, its ceiling the listed price (review it before adding it)."""
    lines = [] if endpoint.price_usdc else ["# Not a known USDC asset: this server pays USDC only."]
    if endpoint.method not in (None, "POST"):
        lines.append(f"# The listing says {endpoint.method}; catalog tools send a JSON POST body.")
    lines.append("[[tool]]")
    ceiling = endpoint.price_usdc or "0.01"
    lines += [
        f"name = {_toml_string(name)}",
        f"url = {_toml_string(endpoint.resource)}",
        f"description = {_toml_string(endpoint.description or 'An x402 image endpoint found by discovery.')}",
        f"ceiling_usdc = {_toml_string(ceiling)}",
    ]
    if endpoint.pay_to is not None and re.fullmatch(r"0x[0-9a-fA-F]{40}", endpoint.pay_to):
        lines.append(f"pay_to = [{_toml_string(endpoint.pay_to)}]")
    image_done = False
    for field in endpoint.inputs:
        name = re.sub(r"[^a-z0-9_]", "_", field.name.lower())
        kind = field.type
        if kind == "image":
            if image_done:
                kind = "string"
            else:
                name, image_done = "image", True
        if not INPUT_NAME.fullmatch(name) or name in ToolInput.model_fields or name.startswith("model_"):
            continue
        lines += ["", f"[tool.input.{name}]", f"type = {_toml_string(kind)}"]
        if field.required or kind == "image":
            lines.append("required = true")
        if field.name != name:
            lines.append(f"send_as = {_toml_string(field.name)}")
        if field.enum and kind != "image":
            lines.append(f"enum = [{', '.join(_toml_value(v) for v in field.enum)}]")
        if field.description:
            lines.append(f"description = {_toml_string(field.description)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: str | int | float) -> str:
    return _toml_string(value) if isinstance(value, str) else repr(value)


def _search_url(base: str) -> str:
    """`/discovery/search` beside `/discovery/resources`; other URLs take the query as they are."""
    return base[: -len("/resources")] + "/search" if base.endswith("/resources") else base


async def _page(services: Services, url: str, params: dict[str, str | int]) -> dict[str, Any]:
    import httpx

    from x402_mcp import net, safe_json

    host = urlsplit(url).hostname or ""
    # A loopback listing is one the user configured (the sandbox, tests); anything else goes
    # through the public-address client, which refuses private and local addresses.
    client = services.http if is_loopback_host(host) else services.public_http
    origin = _origin(url)
    try:
        response = await net.send(client, "GET", url, params=params, headers={"Accept": "application/json"})
    except net.BodyTooLarge as exc:
        raise DiscoveryError(
            f"the discovery service at {origin} sent too much ({exc}); set X402_DISCOVERY_URL "
            "to a facilitator's /discovery/resources"
        ) from None
    except (httpx.HTTPError, net.AddressRefused) as exc:
        raise DiscoveryError(
            f"cannot reach the discovery service at {origin} ({type(exc).__name__}: {exc}); "
            "check the network or X402_DISCOVERY_URL"
        ) from None
    if response.status_code != 200:
        raise DiscoveryError(
            f"the discovery service at {origin} answered {response.status_code}; check "
            "X402_DISCOVERY_URL (a facilitator's /discovery/resources) or try later"
        )
    try:
        data = safe_json.loads(response.content)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise DiscoveryError(
            f"the discovery service at {origin} did not answer with a Bazaar listing "
            "(a JSON object with `items`); check X402_DISCOVERY_URL"
        )
    return data


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


async def discover(services: Services, *, query: str | None = None, limit: int = 20) -> DiscoveryResult:
    """Image-capable endpoints from the listing, at most `limit`, reading at most MAX_PAGES pages."""
    limit = max(1, min(limit, MAX_LIMIT))
    base = services.settings.discovery_url
    url = _search_url(base) if query else base
    endpoints: list[DiscoveredEndpoint] = []
    seen: set[str] = set()
    names = {tool.name for tool in CATALOG} | set(FREE_TOOL_NAMES)  # an entry named like these would be refused
    scanned = skipped = pages = offset = 0
    while pages < MAX_PAGES and len(endpoints) < limit:
        params: dict[str, str | int] = {"type": "http", "limit": PAGE_SIZE, "offset": offset}
        if query:
            params["query"] = query
        data = await _page(services, url, params)
        pages += 1
        items = data["items"][:MAX_ITEMS_PER_PAGE]
        for item in items:
            scanned += 1
            endpoint = _endpoint(item)
            if endpoint is None:
                skipped += int(not _well_formed(item))
                continue
            if endpoint.resource not in seen and len(endpoints) < limit:
                seen.add(endpoint.resource)
                endpoint.catalog_entry = catalog_entry(endpoint, unique_name(tool_name_for(endpoint.resource), names))
                endpoints.append(endpoint)
        offset += len(items)
        total = _amount(_dig(data, "pagination", "total"))
        if not items or total is None or offset >= total:
            break
    return DiscoveryResult(
        source=_origin(url), query=query, endpoints=endpoints, scanned=scanned, skipped_malformed=skipped, pages=pages
    )


def _well_formed(item: Any) -> bool:
    return (
        isinstance(item, dict) and _http_url(item.get("resource")) is not None and isinstance(item.get("accepts"), list)
    )


def discovery_text(result: DiscoveryResult) -> str:
    """A reading of the result for a person or an agent."""
    if not result.endpoints:
        return f"No image endpoints found at {result.source} ({result.scanned} listed resources read). {result.note}"
    lines = [f"{len(result.endpoints)} image endpoint(s) from {result.source} (never called or paid):"]
    for endpoint in result.endpoints:
        price = f"{endpoint.price_usdc} USDC" if endpoint.price_usdc else f"{endpoint.amount_atomic} atomic units"
        lines.append(f"\n{endpoint.resource}\n  {endpoint.description or '(no description)'}")
        lines.append(f"  price {price} on {endpoint.network}, asset {endpoint.asset}, pay to {endpoint.pay_to}")
        if endpoint.inputs:
            fields = ", ".join(f"{f.name} ({f.type}{', required' if f.required else ''})" for f in endpoint.inputs)
            lines.append(f"  inputs: {fields}")
        entry = "\n".join(f"    {line}" if line else "" for line in endpoint.catalog_entry.splitlines())
        lines.append(f"  catalog entry:\n{entry}")
    lines.append(f"\n{result.note}")
    return "\n".join(lines)
