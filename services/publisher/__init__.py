"""publisher: the only writer of the node's ResourceSlices (``knd publisher``)."""

from services.publisher.service import run, serve

__all__ = ["run", "serve"]
