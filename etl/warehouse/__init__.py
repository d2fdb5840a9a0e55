"""The databases nsml-etl writes: the engine and the checks before the first request
(``engine``), one family object per database for what differs between them (``families``: a
module per database and the registry), what a database failure says and means
(``failures``), a runs table's schema and its evolution (``schema``), the writes and reads of
stored runs (``store``), the bookkeeping of exports (``batches``) and the GPU servers table
(``gpuservers``)."""
