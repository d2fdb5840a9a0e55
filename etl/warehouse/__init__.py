"""The databases nsml-etl writes: the engine and the checks before the first request
(``engine``), one family object per database for what differs between them (``dialects``), a
runs table's schema and its evolution (``schema``), the writes and reads of stored runs
(``store``), the bookkeeping of exports (``batches``) and the GPU servers table
(``gpuservers``)."""

from .dialects import FAMILIES
from .duckdb_family import DuckDBFamily

# Registered here until the families have a package of their own (dialects cannot import a
# module that imports it).
FAMILIES["duckdb"] = DuckDBFamily()
