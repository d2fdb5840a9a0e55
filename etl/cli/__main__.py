"""``python -m nsml_etl.cli``: the ``nsml-etl`` command."""

from .commands import main

main()
