"""``nsml-etl simulate``'s work: a :class:`~.simulator.Simulator` listening, with the files a
script reads (its pairs, its address) written before it serves."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import InputError
from ..files import writing
from ..pairs import write_pairs_file
from .simulator import Simulator, SimulatorConfig


def open_simulator(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    pairs_file: str | os.PathLike[str] | None = None,
    address_file: str | os.PathLike[str] | None = None,
) -> Simulator:
    """A simulator listening on ``host``:``port`` (0: a free one), not serving yet: call its
    ``serve_forever()`` (or ``start()``) and ``stop()``. ``pairs_file`` gets its dataset's pairs
    as a pairs CSV, ``address_file`` its base URL (readers never see half of it). A port it
    cannot listen on is an :class:`InputError` that says what to change."""
    try:
        sim = Simulator(config, host=host, port=port)
    except OSError as exc:  # a busy port, an address not ours, a name that does not resolve
        hint = (
            "choose another --port (0 picks a free one)"
            if exc.errno == errno.EADDRINUSE
            else "check --host and --port"
        )
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    try:
        if pairs_file:
            write_pairs_file(Path(pairs_file), sim.pairs())
        if address_file:
            with writing(Path(address_file), "--address-file") as handle:
                handle.write(sim.base_url + "\n")
    except BaseException:
        sim.close()  # it never served: let the port go
        raise
    return sim


def serving_line(sim: Simulator) -> str:
    """What ``simulate`` says once listening: how many runs, where, and the simulated clock."""
    when = f" (simulated clock {sim.clock.isoformat(sep=' ')} UTC)" if sim.clock else ""
    return f"NSML simulator serving {len(sim.pairs())} runs at {sim.base_url}{when}"
