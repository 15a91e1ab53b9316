"""The project's one exception hierarchy: a caller catches by what an error *means* — try again
later, wait out a limit, do not send the same again, or stop — not by the module that raised it.

    GridError
    ├── Temporary          the same call may succeed later: network, timeout, 5xx, a position
    │   │                  the venue could not show
    │   ├── UnknownResult  a request that may or may not have been executed: look before resending
    │   │   └── RateLimited  429 / 418 after every try: wait, never query-and-resend meanwhile
    │   ├── Unreachable    the venue cannot be reached at all (DNS, refused): wait it out
    │   └── PositionUnreadable  the venue did not show the position after every try
    ├── ExchangeError      rejected: the venue refused definitively (Binance's code and message): mend
    │                      the request, do not resend it as it was
    └── Fatal              nothing to retry: keys, permissions, an unknown symbol, a state no
        │                  reconciliation can mend; the process stops with one line
        └── BadInput       a file or a value the user gave is wrong (config, candles, funding,
                           brackets, search space, notification URL): one line naming it; at
                           a reload the last good one is kept

Rate-limited is a kind of unknown result on purpose: the order/batch/cancel paths settle an
unknown by the next reconciliation, which waits for the limit to pass (DECISIONS, issue 18).
"""
from __future__ import annotations


class GridError(Exception):
    """Base of every error the project raises on purpose."""


class Temporary(GridError):
    """The same call may succeed later."""


class UnknownResult(Temporary):
    """The request may or may not have been executed (timeout, network, 5xx): query it by its
    client id before any resend."""


class RateLimited(UnknownResult):
    """429 / 418 after every try: a definite refusal (nothing was executed), never to be settled
    by querying and re-sending while the IP is limited; callers that keep it as "unknown" let the
    next reconciliation look, after the wait."""


class Unreachable(Temporary, ConnectionError):
    """The exchange cannot be reached (network, DNS, refused): the launcher waits it out."""


class PositionUnreadable(Temporary):
    """The venue did not show the position after every try: nothing may be decided on it yet."""


class ExchangeError(GridError):
    """Rejected: a definite rejection by the venue, with Binance's code and message."""

    def __init__(self, code: int, msg: str, http_status: int = 400):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


class Fatal(GridError):
    """Nothing to retry: the process stops with this one-line message."""


class ConfigurationError(Fatal):
    """Bad keys, permissions, an unknown symbol, an account the strategy cannot trade in."""


class BadInput(Fatal, ValueError):
    """A file or value the user gave is wrong; the message names it in one line."""
