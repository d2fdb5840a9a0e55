"""``python -m nsml_etl.cli``: the ``nsml-etl`` command."""

from .main import main

main()
