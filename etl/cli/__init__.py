"""The ``nsml-etl`` command: click commands that parse options, call the library and print
(``commands``)."""

from .commands import main

__all__ = ["main"]
