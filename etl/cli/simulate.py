"""``nsml-etl simulate``: serve the bundled NSML simulator."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import click

from ..config import MAX_SECONDS, credentials_from_env
from ._common import Command, freeze_startup_heap, handle_errors


def _raise_keyboard_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@click.command(cls=Command)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    type=click.IntRange(0, 65535),
    show_default=True,
    help="Port; 0 picks a free one.",
)
@click.option("--seed", default=1, show_default=True, help="Seed of the generated dataset.")
@click.option(
    "--projects",
    default=2,
    type=click.IntRange(min=0),
    show_default=True,
    help="Projects in the dataset.",
)
@click.option(
    "--runs",
    "runs_per_project",
    default=10,
    type=click.IntRange(min=0),
    show_default=True,
    help="Runs per project.",
)
@click.option(
    "--fault-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    show_default=True,
    help="Share of requests answered with an injected fault.",
)
@click.option(
    "--faults",
    default=None,
    metavar="KIND,...",
    help="Fault kinds to inject (default: all but 429-quota): 429 (errorCode 410, with "
    "Retry-After), "
    "429-no-retry-after (errorCode 420), 429-no-code (an HTML 429), 429-quota (one stray "
    "quota answer), 500, 502-html, 503, 504, drop, truncate, slow, trickle.",
)
@click.option(
    "--fault-streak",
    default=None,
    type=click.IntRange(min=1),
    help="At most this many faults in a row for one path.",
)
@click.option(
    "--latency",
    default=0.0,
    type=click.FloatRange(0, MAX_SECONDS),
    show_default=True,
    help="Seconds added to every response.",
)
@click.option(
    "--slow-seconds",
    default=2.0,
    type=click.FloatRange(0, MAX_SECONDS),
    show_default=True,
    help="Delay of a 'slow' fault.",
)
@click.option(
    "--trickle-seconds",
    default=1.0,
    type=click.FloatRange(0, MAX_SECONDS),
    show_default=True,
    help="Seconds between the body bytes of a 'trickle' fault (headers come at once).",
)
@click.option(
    "--retry-after",
    default=1,
    type=click.IntRange(0, MAX_SECONDS),
    show_default=True,
    help="Retry-After seconds sent with 429s.",
)
@click.option(
    "--quota",
    default=None,
    type=click.IntRange(min=0),
    metavar="N",
    help="Spend the usage plan's day or month quota after N requests: every request "
    "after them is answered 429 errorCode 400 (Quota Exceeded) until the simulator restarts.",
)
@click.option(
    "--gateway-clock-offset",
    default=0.0,
    type=click.FloatRange(-MAX_SECONDS, MAX_SECONDS),
    show_default=True,
    metavar="SECONDS",
    help="Run the gateway's own clock (its signature window and Date header) this "
    "far ahead of this machine's (negative: behind), to try 'nsml-etl check'.",
)
@click.option(
    "--broken-node-lists",
    default=0.0,
    type=click.FloatRange(0.0, 1.0),
    show_default=True,
    metavar="SHARE",
    help="Share of runs whose node list answers 500 every time (drawn per run from the "
    "seed), to see export --nodes fail a run's node list alone.",
)
@click.option(
    "--address-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the base URL here once listening.",
)
@click.option(
    "--write-pairs",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the dataset's pairs as a CSV pairs file.",
)
@click.option(
    "--epoch",
    default=None,
    metavar="TIME",
    help="Let time pass: runs are created from this moment on (ISO 8601, UTC unless "
    "it says; default 2026-01-05T00:00:00Z once --clock or --clock-file is given) "
    "and change status as the simulated clock moves.",
)
@click.option(
    "--clock",
    "clock_at",
    default=None,
    metavar="TIME",
    help="The simulated moment to serve (default: the epoch).",
)
@click.option(
    "--clock-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the simulated moment from this file whenever it changes, so a script "
    "can move the clock between exports (write it to a temporary file and rename).",
)
@handle_errors
def simulate(
    host: str,
    port: int,
    seed: int,
    projects: int,
    runs_per_project: int,
    fault_rate: float,
    faults: str | None,
    fault_streak: int | None,
    latency: float,
    slow_seconds: float,
    trickle_seconds: float,
    retry_after: int,
    quota: int | None,
    gateway_clock_offset: float,
    broken_node_lists: float,
    address_file: Path | None,
    write_pairs: Path | None,
    epoch: str | None,
    clock_at: str | None,
    clock_file: Path | None,
) -> None:
    """Serve a local NSML API (signature-checked, deterministic data, optional faults).

    It accepts the keys in NCP_ACCESS_KEY / NCP_SECRET_KEY (and NCP_APIGW_API_KEY if set).
    Data is frozen unless --epoch, --clock or --clock-file lets time pass; exports then record
    the simulated moment when NSML_ETL_CLOCK holds it too.
    """
    from ..clock import parse_moment
    from ..testing.serve import open_simulator, serving_line
    from ..testing.simulator import (
        DEFAULT_EPOCH,
        DEFAULT_FAULT_KINDS,
        FAULT_KINDS,
        SimulatorConfig,
    )

    credentials = credentials_from_env()
    kinds = tuple(k.strip() for k in faults.split(",")) if faults else DEFAULT_FAULT_KINDS
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise click.BadParameter(
            f"unknown fault kind(s): {', '.join(unknown)}", param_hint="--faults"
        )
    config = SimulatorConfig(
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        api_key=credentials.api_key,
        seed=seed,
        projects=projects,
        runs_per_project=runs_per_project,
        fault_rate=fault_rate,
        fault_kinds=kinds,
        fault_streak=fault_streak,
        latency=latency,
        slow_seconds=slow_seconds,
        trickle_seconds=trickle_seconds,
        retry_after=retry_after,
        quota=quota,
        clock_offset=gateway_clock_offset,
        broken_node_lists=broken_node_lists,
    )
    if epoch or clock_at or clock_file:
        config.epoch = parse_moment(epoch, "--epoch") if epoch else DEFAULT_EPOCH
        config.clock = parse_moment(clock_at, "--clock") if clock_at else None
        config.clock_file = clock_file
    sim = open_simulator(config, host, port, pairs_file=write_pairs, address_file=address_file)
    click.echo(serving_line(sim), err=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    freeze_startup_heap(preload=False)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
