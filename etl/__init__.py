"""nsml-etl: export CLOVA NSML runs into a SQL table."""

__version__ = "0.1.0"
