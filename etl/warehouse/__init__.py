"""The databases nsml-etl writes. A command opens one :class:`Warehouse` (``warehouse``): it owns
the engine and the checks before the first request (``engine``), the family object that says
what differs between databases (``dialects``), and by composition the runs table's schema and
its evolution (``schema``), the writes and reads of stored runs (``store``), the bookkeeping of
exports (``batches``) and the GPU servers table (``gpuservers``)."""

from .warehouse import DRY_RUN, READ, WRITE, Purpose, Warehouse

__all__ = ["DRY_RUN", "READ", "WRITE", "Purpose", "Warehouse"]
