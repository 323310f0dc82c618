"""JSON from untrusted peers, with its nesting bounded before the parser sees it.

A body of 200,000 `[` makes json.loads recurse until the interpreter dies (eth-account's
dependencies raise the recursion limit, so it is a crash, not a RecursionError). Every answer
from an upstream, a 402 challenge, a receipt or a job status goes through here first.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64


_STRUCTURE = re.compile(rb'["\\\[\]{}]')


def nesting_depth(text: str | bytes, limit: int = MAX_DEPTH) -> int:
    """The deepest [ / { nesting outside strings, counting no further than `limit` + 1.

    Only the structural bytes are visited (a regex finds them), so ordinary bodies cost microseconds.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    in_string = False
    skip_until = -1
    for match in _STRUCTURE.finditer(data):
        position = match.start()
        if position < skip_until:
            continue  # the character escaped by a backslash
        byte = data[position]
        if in_string:
            if byte == 0x5C:  # backslash: the next byte is escaped
                skip_until = position + 2
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, refusing (ValueError) anything nested deeper than `max_depth`."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    # No deeper than its count of openers: most bodies are settled by two C-speed counts.
    if data.count(b"[") + data.count(b"{") > max_depth and nesting_depth(data, max_depth) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)
