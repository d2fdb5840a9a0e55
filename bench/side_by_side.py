"""How many exports side by side still all succeed: N `nsml-etl export` processes at once, one
project each, into one existing table, every run bringing an env key of its own (so every
chunk of every export adds a column), with --chunk-size 1 and 5.

    .venv/bin/python bench/side_by_side.py [--exports 3,6,10] [--runs 10] [--db URL ...]

Without --db: a fresh SQLite file, and a fresh database on each server named by
NSML_ETL_TEST_POSTGRES_URL and NSML_ETL_TEST_MYSQL_URL. Prints one line per case: exports that
exited 0, runs that landed with their env column filled, and the wall time (for scale only).
Not part of `make test`: 10 exports of chunk size 1 take a while on a small machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from nsml_etl.testing.simulator import Simulator, SimulatorConfig

KEYS = {"NCP_ACCESS_KEY": "AKBENCH0000000000000", "NCP_SECRET_KEY": "bench-secret"}
SERVER_URLS = ("NSML_ETL_TEST_POSTGRES_URL", "NSML_ETL_TEST_MYSQL_URL")


def simulator(exports: int, runs: int) -> Simulator:
    config = SimulatorConfig(
        access_key=KEYS["NCP_ACCESS_KEY"],
        secret_key=KEYS["NCP_SECRET_KEY"],
        projects=exports,
        runs_per_project=runs,
    )
    sim = Simulator(config).start()
    for n, project in enumerate(sim.data):
        for i, name in enumerate(list(sim.data[project]["runs"])):
            sim.put_run(
                project, name, {**sim.run(project, name), "envs": {f"E{n}_{i}": f"{n}-{i}"}}
            )
    return sim


def fresh_database(server_url: str) -> tuple[str, sa.Engine, str]:
    name = f"nsml_etl_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        charset = " CHARACTER SET utf8mb4" if admin.dialect.name in ("mysql", "mariadb") else ""
        conn.exec_driver_sql(f"CREATE DATABASE {name}{charset}")
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    return url, admin, name


def export(pairs: Path, db_url: str, base_url: str, chunk_size: int) -> subprocess.Popen:
    command = [
        *(sys.executable, "-m", "nsml_etl.cli", "export", "--pairs", str(pairs), "-q"),
        *("--db", db_url, "--base-url", base_url, "--chunk-size", str(chunk_size)),
    ]
    return subprocess.Popen(
        command,
        env={**os.environ, **KEYS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_case(db_url: str, exports: int, runs: int, chunk_size: int, tmp: Path) -> str:
    sim = simulator(exports, runs)
    try:
        by_project = [[(p, r) for r in sim.data[p]["runs"]] for p in sim.data]
        paths = []
        for n, pairs in enumerate([by_project[0][:1], *by_project]):
            paths.append(tmp / f"pairs{n}.csv")
            with open(paths[-1], "w", newline="") as handle:
                csv.writer(handle).writerows([("project_id", "run_name"), *pairs])
        seed = export(paths.pop(0), db_url, sim.base_url, chunk_size)  # the table exists first
        if seed.wait() != 0:
            raise SystemExit(
                f"seeding {db_url} failed: {seed.stderr.read() if seed.stderr else ''}"
            )
        started = time.perf_counter()
        procs = [export(path, db_url, sim.base_url, chunk_size) for path in paths]
        codes = [proc.wait() for proc in procs]
        elapsed = time.perf_counter() - started
        errors = {proc.stderr.read().strip()[:200] for proc in procs if proc.stderr} - {""}
        landed = _landed(db_url, sim)
    finally:
        sim.stop()
    line = (
        f"{exports:3d} exports, chunk size {chunk_size}: {codes.count(0)}/{exports} exit 0, "
        f"{landed}/{exports * runs} runs landed with their column, {elapsed:.1f}s"
    )
    return line + "".join(f"\n    {e}" for e in sorted(errors))


def _landed(db_url: str, sim: Simulator) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            mapping = conn.execute(sa.text("SELECT env_key, column_name FROM nsml_env_columns"))
            columns = {key: column for key, column in mapping}
            rows = conn.execute(sa.text("SELECT * FROM nsml_runs")).mappings().all()
    finally:
        engine.dispose()
    landed = 0
    for row in rows:
        ((key, value),) = sim.run(row["project_id"], row["run_name"])["envs"].items()
        landed += columns.get(key) is not None and row[columns[key]] == value
    return landed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", default="3,6,10", help="exports side by side, comma-separated")
    parser.add_argument("--runs", type=int, default=10, help="runs per export (one project each)")
    parser.add_argument("--chunk-sizes", default="1,5", help="comma-separated")
    parser.add_argument("--db", action="append", help="a server URL (a fresh database is made)")
    args = parser.parse_args()
    servers = args.db or [os.environ[v] for v in SERVER_URLS if os.environ.get(v)]
    for server in [None, *servers]:
        for exports in map(int, args.exports.split(",")):
            for chunk_size in map(int, args.chunk_sizes.split(",")):
                with tempfile.TemporaryDirectory(prefix="nsml-side-by-side-") as name:
                    tmp = Path(name)
                    if server is None:
                        db_url, admin, database = f"sqlite:///{tmp / 'runs.db'}", None, ""
                    else:
                        db_url, admin, database = fresh_database(server)
                    try:
                        label = sa.make_url(db_url).get_backend_name()
                        print(f"{label:10s}", one_case(db_url, exports, args.runs, chunk_size, tmp))
                    finally:
                        if admin is not None:
                            with admin.connect() as conn:
                                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
                            admin.dispose()


if __name__ == "__main__":
    main()
