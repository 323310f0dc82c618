"""The typed errors of the money path. Every message is written for the agent reading it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from x402_mcp.payments.payer import Payment


class X402Error(Exception):
    """Base of every error the payment code raises on purpose.

    `payment` is the signed payment whose header may have left the process, if there is one: from
    then on the payment counts against the budgets, so `money_spent` is true.
    """

    def __init__(self, message: str, *, payment: Payment | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.payment = payment
        self.status = status

    @property
    def money_spent(self) -> bool:
        """Whether money may have left the wallet (a signed header may have reached the upstream)."""
        return self.payment is not None


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
