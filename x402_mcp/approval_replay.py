"""One approval buys one payment: each sealed `requestState` opens at most one paid call.

On 2026-07-28 connections the user's answer to a payment question comes back with the client's
next `tools/call`, beside a `requestState` token the SDK sealed (AES-GCM under a key made for this
server instance, valid STATE_TTL_SECONDS). Sending that request again would replay the approval.
The plaintext state inside is the same for two identical calls; the sealed token is not (a fresh
nonce each time), and the SDK accepts only its canonical spelling, so the token is what gets
used up.

The record is per server instance, which is complete: the key is made per instance
(`RequestStateSecurity.ephemeral`), so no other process can mint or open these tokens. Entries are
dropped once the token they stand for has expired; if the record is ever full, calls are refused
rather than an entry forgotten early.
"""

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

#: How long a sealed requestState is accepted; the record keeps each used token this long.
STATE_TTL_SECONDS = 600.0
#: Used tokens remembered at once (about 100 bytes each).
MAX_TRACKED = 10_000

USED = (
    "this approval was already used by an earlier call: one approval buys at most one payment "
    "(payment_history shows what it bought). This call signed nothing and paid nothing; "
    "call {tool} again to ask the user anew."
)
FULL = (
    "too many approvals in the last few minutes to keep track of, so this one is refused. "
    "This call signed nothing and paid nothing; call {tool} again in a few minutes."
)

#: While a paid call is served: None, or why its approval may not buy anything (a template with {tool}).
approval_refusal: ContextVar[str | None] = ContextVar("approval_refusal", default=None)


class ApprovalReplayGuard:
    """Server middleware that lets each requestState sent to a paid tool be used once.

    It has to sit outside the SDK's request-state boundary, which replaces the sealed token with
    its (not unique) plaintext before inner middleware and handlers see it.
    """

    def __init__(
        self, paid_tools: frozenset[str], *, ttl: float = STATE_TTL_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self._paid_tools = paid_tools
        self._ttl = ttl
        self._clock = clock  # wall time, like the boundary's expiry check
        self._used: OrderedDict[bytes, float] = OrderedDict()  # token digest -> when it may be forgotten

    def use(self, token: str) -> str | None:
        """Mark `token` used. None if it was fresh, else the refusal template."""
        now = self._clock()
        while self._used and next(iter(self._used.values())) <= now:
            self._used.popitem(last=False)
        digest = hashlib.sha256(token.encode()).digest()
        if digest in self._used:
            return USED
        if len(self._used) >= MAX_TRACKED:
            return FULL
        # Marked before the call runs, so concurrent replays of one token find it used.
        self._used[digest] = now + self._ttl
        return None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params or {}
        token = params.get("requestState")
        if ctx.method != "tools/call" or params.get("name") not in self._paid_tools or not isinstance(token, str):
            return await call_next(ctx)
        reset = approval_refusal.set(self.use(token))
        try:
            return await call_next(ctx)
        finally:
            approval_refusal.reset(reset)
