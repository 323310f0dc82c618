"""The typed errors of the money path, under the one root (x402_mcp/errors.py)."""

from __future__ import annotations

from x402_mcp.errors import X402Error


class ChallengeError(X402Error):
    """A 402 answer whose payment requirements cannot be read."""


class PaymentRefused(X402Error):
    """Nothing may be paid (policy, limits, the user, the challenge): no signature left the process."""


class PaymentDeclined(X402Error):
    """The upstream sent a failure receipt for a signed payment: its word, not proof."""


class ReceiptError(X402Error):
    """A settlement receipt header that cannot be decoded."""


class UpstreamError(X402Error):
    """The upstream answered with an error, or could not be reached."""
