"""The HTTP status of each reason an operation is refused (``cds.errors.Refusal``):
the one place where the API's status codes meet the node's errors."""

from __future__ import annotations

from cds.errors import Refusal

HTTP_STATUS: dict[Refusal, int] = {
    Refusal.NOT_FOUND: 404,
    Refusal.CONFLICT: 409,
    Refusal.INVALID: 422,
    Refusal.UNAVAILABLE: 503,
}


def http_status(refusal: Refusal) -> int:
    return HTTP_STATUS[refusal]
