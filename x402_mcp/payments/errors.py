"""The typed errors of the money path. Every message is written for the agent reading it."""

from __future__ import annotations


class X402Error(Exception):
    """Base of every error the payment code raises on purpose."""

    #: Whether money may have left the wallet when this error was raised.
    money_spent: bool = False


class ChallengeError(X402Error):
    """A 402 answer whose payment requirements cannot be read."""


class PaymentRefused(X402Error):
    """The challenge was readable, but nothing in it may be paid: no signature was made."""


class ReceiptError(X402Error):
    """A settlement receipt header that cannot be decoded."""


class UpstreamError(X402Error):
    """The upstream answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, money_spent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.money_spent = money_spent
