"""The databases nsml-etl writes. A command opens one :class:`Warehouse` (``warehouse``): it owns
the engine and the checks before the first request (``engine``), the family object that says
what differs between databases (``families``: a module per database and the registry), and by
composition the runs table's schema and its evolution (``schema``; the tables it makes in
``tables``, earlier versions' layouts brought up to date in ``migrations``), the writes and
reads of stored runs (``store``; one chunk's stage, history and merge in ``writer``), the
bookkeeping of exports (``batches``) and the GPU servers table (``gpuservers``). What a database
failure says and means is ``failures``. DuckDB's SQLAlchemy dialect is ``duckdb_dialect``."""

from .warehouse import DRY_RUN, READ, WRITE, Purpose, Warehouse

__all__ = ["DRY_RUN", "READ", "WRITE", "Purpose", "Warehouse"]
