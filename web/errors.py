"""Domain errors mapped to HTTP once, for every route."""

from __future__ import annotations

import falcon

from actors.submit import BrokerUnavailable

__all__ = ["register_error_handlers", "BodyLimit"]


def _broker_unavailable(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    raise falcon.HTTPServiceUnavailable(
        title="Broker unavailable",
        description=str(ex),
        retry_after=5,
    )


def register_error_handlers(app: falcon.App) -> None:
    app.add_error_handler(BrokerUnavailable, _broker_unavailable)


class BodyLimit:
    """Refuse bodies over the configured size before anything reads them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > self.max_bytes:
            raise falcon.HTTPContentTooLarge(
                title="Request body too large",
                description=f"The body is {length} bytes; the limit is {self.max_bytes} bytes.",
            )
