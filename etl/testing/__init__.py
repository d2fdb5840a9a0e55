"""A simulator of the NSML API over loopback HTTP (``simulator``): shipped, since ``nsml-etl
simulate`` and ``make demo`` use it, and the tests run against it."""
