"""The user's own paid tools, from the TOML file X402_CATALOG_FILE names.

Each `[[tool]]` entry becomes a ToolSpec like the built-in ones (catalog.py), so it is served by
the same money path: the same limits, image inputs, outputs and previews. The file is
configuration: its path is read only where the other X402_* settings are (the process
environment or the user-level file), so a project's `.env` can never add a paid tool. A bad file
stops the server at start with its line and the field named (`CatalogError`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, create_model

from x402_mcp.catalog import _IMAGE_FORMS, CATALOG, ImageResult, ToolInput, ToolSpec
from x402_mcp.config import check_url, parse_addresses

TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
INPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Upstream field names (send_as) and result paths: plain JSON keys, dots between path parts.
WIRE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
RESULT_PATH = re.compile(r"^[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,7}$")
URL_PATH = re.compile(r"^/?[A-Za-z0-9._~\-]+(/[A-Za-z0-9._~\-]+)*/?$")
#: The free tools' names: a catalog entry may not take one either.
FREE_TOOL_NAMES = frozenset(
    {
        "image_mask",
        "image_job_status",
        "image_history",
        "wallet_status",
        "payment_history",
        "quote",
        "discover_endpoints",
    }
)
MAX_FILE_BYTES = 1_000_000
MAX_TOOLS = 100
MAX_INPUTS = 50
#: A string input's length when the entry gives no max_length.
DEFAULT_MAX_LENGTH = 10_000
IMAGE_MAX_LENGTH = 40_000_000

TOOL_KEYS = frozenset({"name", "url", "description", "ceiling_usdc", "pay_to", "input", "result_field"})
INPUT_KEYS = frozenset(
    {"type", "required", "default", "enum", "minimum", "maximum", "max_length", "send_as", "description"}
)
PYTHON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "image": str}


class CatalogError(ValueError):
    """A catalog file that cannot be served; the message names the file, the line and the field."""


class UserToolInput(ToolInput):
    """Base of a catalog entry's input model: unknown fields refused, `send_as` names used upstream."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, serialize_by_alias=True)


@dataclass(frozen=True)
class UserToolSpec(ToolSpec):
    """A paid tool from the user's catalog file: no listed price, only its ceiling."""

    @property
    def description(self) -> str:
        return (
            f"{self.summary} A tool from the user's catalog file: each call pays the upstream's asked price in USDC "
            f"over x402 from the configured wallet, never more than ${self.price_ceiling} nor above "
            "X402_MAX_PER_CALL. Returns the image URL, a preview, the saved file and the payment receipt."
        )


class _Lines:
    """Line numbers in the file's text for entries and keys (tomllib gives them only for syntax errors)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.starts = [n for n, line in enumerate(self.lines, 1) if re.match(r"^\s*\[\[\s*tool\s*\]\]", line)]

    def entry(self, index: int) -> int:
        return self.starts[index] if index < len(self.starts) else 1

    def key(self, index: int, key: str, table: str | None = None) -> int:
        """The line of `key` in entry `index` (inside `[tool.input.<table>]` when given)."""
        start = self.entry(index)
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.lines) + 1
        if table is not None:
            header = re.compile(rf"^\s*\[\s*tool\s*\.\s*input\s*\.\s*\"?{re.escape(table)}\"?\s*\]")
            found = next((n for n in range(start, end) if header.match(self.lines[n - 1])), None)
            if found is None:
                return start
            start = found
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        in_own_table = table is not None
        for number in range(start, end):
            line = self.lines[number - 1]
            if number > start and re.match(r"^\s*\[", line) and table is not None:
                break  # the next table: the key is not in this one
            if pattern.match(line) and (in_own_table or not _inside_subtable(self.lines, start, number)):
                return number
        return start


def _inside_subtable(lines: list[str], start: int, number: int) -> bool:
    return any(re.match(r"^\s*\[\s*tool\s*\.", lines[n - 1]) for n in range(start + 1, number))


@lru_cache(maxsize=16)
def _load_cached(path: Path) -> tuple[UserToolSpec, ...]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog file ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CatalogError(f"{path}: the catalog file is over {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: the catalog file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: invalid TOML: {exc}") from None
    return _Parser(path, _Lines(text)).tools(document)


def load_user_catalog(path: Path) -> tuple[UserToolSpec, ...]:
    """The tools of a catalog file, or `CatalogError` naming its line and field.

    Read once per process, when the settings load: the tools served and the ones `quote` or a
    resumed job look up stay the same until a restart, whatever happens to the file meanwhile.
    """
    path = path.expanduser().absolute()
    if not path.is_file():
        raise CatalogError(f"{path}: no catalog file there; create it or unset X402_CATALOG_FILE")
    return _load_cached(path)


class _Parser:
    def __init__(self, path: Path, lines: _Lines) -> None:
        self.path = path
        self.lines = lines

    def fail(self, line: int, message: str) -> CatalogError:
        return CatalogError(f"{self.path}:{line}: {message}")

    def tools(self, document: dict[str, Any]) -> tuple[UserToolSpec, ...]:
        unknown = sorted(set(document) - {"tool"})
        if unknown:
            raise self.fail(1, f"unknown top-level key {unknown[0]!r}: the file holds [[tool]] entries only")
        entries = document.get("tool", [])
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise self.fail(1, "`tool` must be an array of tables: write each entry as [[tool]]")
        if len(entries) > MAX_TOOLS:
            raise self.fail(self.lines.entry(MAX_TOOLS), f"more than {MAX_TOOLS} tools")
        builtin = {entry.name for entry in CATALOG}
        seen: dict[str, int] = {}
        tools = []
        for index, entry in enumerate(entries):
            tool = self.tool(index, entry)
            line = self.lines.key(index, "name")
            if tool.name in builtin or tool.name in FREE_TOOL_NAMES:
                raise self.fail(line, f"name: {tool.name!r} is a built-in tool's name; choose another")
            if tool.name in seen:
                raise self.fail(line, f"name: duplicate tool name {tool.name!r} (first at line {seen[tool.name]})")
            seen[tool.name] = line
            tools.append(tool)
        return tuple(tools)

    def tool(self, index: int, entry: dict[str, Any]) -> UserToolSpec:
        def fail(key: str, message: str) -> CatalogError:
            return self.fail(self.lines.key(index, key), f"tool {label}: {key}: {message}")

        label = f"#{index + 1}"
        name = entry.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise fail("name", "required, lowercase letters, digits and _ ([a-z][a-z0-9_]{2,63}), e.g. 'image_upscale'")
        label = repr(name)
        unknown = sorted(set(entry) - TOOL_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown key; the keys are {', '.join(sorted(TOOL_KEYS))}")
        url = entry.get("url")
        if not isinstance(url, str) or not url.strip():
            raise fail("url", "required: an https URL, or a path under X402_BASE_URL such as '/v1/upscale'")
        path = self.url(url.strip(), lambda message: fail("url", message))
        description = entry.get("description")
        if not isinstance(description, str) or not description.strip() or len(description) > 2000:
            raise fail("description", "required: a sentence of up to 2000 characters saying what the tool does")
        if "ceiling_usdc" not in entry:
            raise fail("ceiling_usdc", 'required: the most this tool may ever pay per call, e.g. ceiling_usdc = "0.05"')
        ceiling = self.ceiling(entry["ceiling_usdc"], lambda message: fail("ceiling_usdc", message))
        pay_to = None
        if "pay_to" in entry:
            items = entry["pay_to"]
            if not isinstance(items, list) or not items or not all(isinstance(item, str) for item in items):
                raise fail("pay_to", 'a list of 0x addresses, e.g. pay_to = ["0xabc…"]')
            try:
                pay_to = parse_addresses(",".join(items), "pay_to")
            except ValueError as exc:
                raise fail("pay_to", str(exc).removeprefix("pay_to ")) from None
        result_field = entry.get("result_field", "image_url")
        if not isinstance(result_field, str) or not RESULT_PATH.fullmatch(result_field):
            raise fail("result_field", "a field name of the answer, or a dotted path such as 'data.0.url'")
        inputs = entry.get("input", {})
        if not isinstance(inputs, dict):
            raise fail("input", "a table of inputs: [tool.input.<name>] with type = ...")
        model, image_fields = self.input_model(index, name, inputs)
        return UserToolSpec(
            name=name,
            title=name.replace("_", " ").capitalize(),
            path=path,
            summary=description.strip(),
            input_model=model,
            output_model=ImageResult,
            listed_price=ceiling,
            price_ceiling=ceiling,
            image_fields=image_fields,
            pay_to=pay_to,
            result_field=result_field,
        )

    @staticmethod
    def url(url: str, fail: Any) -> str:
        if "://" in url:
            try:
                return check_url(url, "url")
            except ValueError as exc:
                raise fail(str(exc).removeprefix("url ")) from None
        if url.startswith("//") or not URL_PATH.fullmatch(url) or ".." in url.split("/"):
            raise fail(f"{url!r} is neither an https URL nor a plain path under X402_BASE_URL")
        return url.lstrip("/")

    @staticmethod
    def ceiling(value: Any, fail: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise fail('a USDC amount such as "0.05"')
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise fail(f'{value!r} is not a USDC amount such as "0.05"') from None
        if not amount.is_finite() or amount <= 0 or amount.as_tuple().exponent < -6 or amount > 1_000_000:  # type: ignore[operator]
            raise fail(f"{value!r} must be above 0 with at most 6 decimals")
        return amount

    def input_model(self, index: int, tool: str, inputs: dict[str, Any]) -> tuple[type[UserToolInput], dict[str, str]]:
        if len(inputs) > MAX_INPUTS:
            raise self.fail(self.lines.key(index, "input"), f"tool {tool!r}: more than {MAX_INPUTS} inputs")
        fields: dict[str, Any] = {}
        image_fields: dict[str, str] = {}
        wire_names: dict[str, str] = {}
        for name, options in inputs.items():

            def fail(key: str, message: str, name: str = name) -> CatalogError:
                return self.fail(
                    self.lines.key(index, key, table=name), f"tool {tool!r}: input {name!r}: {key}: {message}"
                )

            if not INPUT_NAME.fullmatch(name) or name in ToolInput.model_fields or name.startswith("model_"):
                reserved = ", ".join(sorted(ToolInput.model_fields))
                raise fail("name", f"an input name is lowercase letters, digits and _, not model_* nor {reserved}")
            if not isinstance(options, dict):
                raise fail("type", f"write it as a table: [tool.input.{name}] with type = ...")
            annotation, default, wire = self.input_field(name, options, fail)
            if wire in wire_names:
                raise fail("send_as", f"{wire!r} is already sent for input {wire_names[wire]!r}")
            wire_names[wire] = name
            if options["type"] == "image":
                image_fields[name] = wire
            fields[name] = (annotation, default)
        model = create_model(f"{tool}_input", __base__=UserToolInput, __module__=__name__, **fields)
        return model, image_fields

    @staticmethod
    def input_field(name: str, options: dict[str, Any], fail: Any) -> tuple[Any, Any, str]:
        """(annotation, default, upstream name) of one input, every option checked against its type."""
        unknown = sorted(set(options) - INPUT_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown key; the keys are {', '.join(sorted(INPUT_KEYS))}")
        kind = options.get("type")
        if kind not in PYTHON_TYPES:
            raise fail("type", f"unknown type {kind!r}; use string, integer, number, boolean or image")
        required = options.get("required", False)
        if not isinstance(required, bool):
            raise fail("required", "true or false")
        send_as = options.get("send_as", name)
        if not isinstance(send_as, str) or not WIRE_NAME.fullmatch(send_as):
            raise fail("send_as", "the upstream's field name: letters, digits, _ and -")
        description = options.get("description", "")
        if not isinstance(description, str) or len(description) > 1000:
            raise fail("description", "a string of up to 1000 characters")
        if kind == "image":
            # Any number of image inputs, each read and confined like a built-in's (call_inputs.py).
            description = f"{(description or 'The input image').rstrip('. ')}. Give it as {_IMAGE_FORMS}."
        constraints: dict[str, Any] = {}
        numeric = kind in ("integer", "number")
        for key, field_name in (("minimum", "ge"), ("maximum", "le")):
            if key in options:
                value = options[key]
                if not numeric:
                    raise fail(key, f"only for integer and number inputs, not {kind}")
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise fail(key, "a number")
                constraints[field_name] = value
        if constraints.get("ge", float("-inf")) > constraints.get("le", float("inf")):
            raise fail("maximum", "below the minimum: no value would be allowed")
        if kind in ("string", "image"):
            limit = options.get("max_length", IMAGE_MAX_LENGTH if kind == "image" else DEFAULT_MAX_LENGTH)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise fail("max_length", "a positive integer")
            constraints["max_length"] = limit
            constraints["min_length"] = 1
        elif "max_length" in options:
            raise fail("max_length", f"only for string and image inputs, not {kind}")
        base: Any = PYTHON_TYPES[kind]
        if "enum" in options:
            choices = options["enum"]
            if kind in ("image", "boolean") or not isinstance(choices, list) or not choices:
                raise fail("enum", "a non-empty list of allowed values (string, integer or number inputs)")
            for choice in choices:
                _check_value(base, choice, kind, lambda message: fail("enum", message))
            base = Literal[tuple(choices)]
        annotation: Any = Annotated[base, Field(description=description or None, **constraints)]
        if required:
            if "default" in options:
                raise fail("default", "a required input has no default; drop one of them")
            if send_as != name:
                annotation = Annotated[annotation, Field(serialization_alias=send_as)]
            return annotation, ..., send_as
        default = options.get("default")
        if default is not None:
            try:
                TypeAdapter(annotation).validate_python(default, strict=kind != "number")
            except ValidationError as exc:
                message = "; ".join(error["msg"] for error in exc.errors())
                raise fail("default", f"{default!r} is not a valid value: {message}") from None
        else:
            annotation = annotation | None
        if send_as != name:
            annotation = Annotated[annotation, Field(serialization_alias=send_as)]
        return annotation, default, send_as


def _check_value(base: Any, value: Any, kind: str, fail: Any) -> None:
    # bool is an int to Python, never to the file's author.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number if kind == "number" else type(value) is base):
        raise fail(f"{value!r} is not a {kind}")
