"""A simulator of the NSML API over loopback HTTP (``simulator``: signatures, faults, quota,
the simulated clock) and the runs it serves (``dataset``: seeded runs and their lifecycles):
shipped, since ``nsml-etl simulate`` and ``make demo`` use it, and the tests run against it."""
