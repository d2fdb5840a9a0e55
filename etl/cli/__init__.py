"""The ``nsml-etl`` command: one module per command (``export``, ``load``, ``pairs``, ``views``,
``check``, ``gpu_servers``, ``report``, ``simulate``), each parsing its options, calling the
library and printing; ``_common`` holds what they share, ``main`` the group that gathers them."""

from .main import main

__all__ = ["main"]
