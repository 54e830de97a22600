"""Typed errors raised at the edges; the HTTP layer turns them into 4xx responses."""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """A request field is missing, malformed or out of range. ``field`` names it (dotted path)."""

    def __init__(self, message: str, field: str | None = None, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status_code = status_code
