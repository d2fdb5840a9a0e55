"""The databases nsml-etl writes. A command opens one :class:`Warehouse` (``warehouse``): it owns
the engine and the checks before the first request (``engine``), the family object that says
what differs between databases (``dialects``, and ``duckdb_family``), and by composition the
runs table's schema and its evolution (``schema``), the writes and reads of stored runs
(``store``), the bookkeeping of exports (``batches``) and the GPU servers table
(``gpuservers``)."""

from .dialects import FAMILIES
from .duckdb_family import DuckDBFamily
from .warehouse import DRY_RUN, READ, WRITE, Purpose, Warehouse

# Registered here until the families have a package of their own (dialects cannot import a
# module that imports it).
FAMILIES["duckdb"] = DuckDBFamily()

__all__ = ["DRY_RUN", "READ", "WRITE", "Purpose", "Warehouse"]
