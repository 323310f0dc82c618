"""The root of every error the agent sees, carrying whether money may have been spent.

Bad input, a refused payment, a failed upstream, an image that cannot be read: each is an
`X402Error`, and each becomes one readable tool result (paid_call.error_result) whose text and
structured content say whether money was spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from x402_mcp.payments.payer import Payment


class X402Error(Exception):
    """An error written for the agent.

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
