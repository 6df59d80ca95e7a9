"""publisher: the only writer of the node's ResourceSlices (``knd publisher``)."""

from services.publisher.service import add_arguments, run, serve

__all__ = ["add_arguments", "run", "serve"]
