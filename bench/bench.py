"""`make bench`: speed and memory of nsml-etl as ratios to baselines measured in the same run.

The machine is shared and noisy, so every figure is a ratio to something timed in the same
rounds on the same machine: what is compared takes turns within each round, and each timing is
the best of REPEATS rounds (BENCH_REPEATS; the cheap fetch rounds twice as many).

* fetch: (time for 2,000 runs - time for 1 run) / latency bound (2000 x 50 ms / 32 workers),
  against the simulator in its own process. Target <= 1.15.
* load: `nsml-etl load` of 100,000 raw runs (20 env keys each) into a fresh table (inserts),
  then again (updates), divided by the baseline (plain-Python flatten + DataFrame.to_sql; on
  DuckDB the frame goes in by DuckDB's bulk path instead, see baseline_to_sql.py).
  Target <= 1.0 each, on SQLite, DuckDB (when the duckdb extra is installed) and, when
  NSML_ETL_TEST_POSTGRES_URL is set, PostgreSQL.
* nodes: the same 2,000-run export with --nodes (each run's node list too), taking turns with
  the fetch rounds: its requests (from --metrics-file) and time, against the export without.
  No target: it says what --nodes costs.
* memory: peak RSS of that load. Target <= 150 MB, and about the same for 25,000 runs.

Results go to bench/results.json as well.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
PEAK_RSS = HERE.parent / "scripts" / "peak_rss.py"
PYTHON = sys.executable
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
FETCH_REPEATS = 2 * REPEATS
FETCH_RUNS, LATENCY, CONCURRENCY = 2000, 0.05, 32
LOAD_RUNS = int(os.environ.get("BENCH_LOAD_RUNS", "100000"))
ENV_KEYS = 20
KEYS = {"AK": "AKBENCH0000000000000", "SK": "bench-secret"}
ENV = {**os.environ, "NCP_ACCESS_KEY": KEYS["AK"], "NCP_SECRET_KEY": KEYS["SK"]}


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one Python child; fails loudly on a bad exit.

    ``cmd`` is ``[python, ...]``; it runs under scripts/peak_rss.py, which reports the child's
    own peak (getrusage would also count the bench process it was forked from)."""
    started = time.perf_counter()
    proc = subprocess.run([cmd[0], str(PEAK_RSS), *cmd[1:]], env=ENV, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}")
    peak_kib = int(proc.stderr.decode().rsplit("peak_rss_kib=", 1)[1])
    return elapsed, peak_kib / 1024


def start_simulator(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    address, pairs = tmp / "address", tmp / "pairs.csv"
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "nsml_etl.cli",
            "simulate",
            "--projects",
            "4",
            "--runs",
            str(FETCH_RUNS // 4),
            "--latency",
            str(LATENCY),
            "--address-file",
            str(address),
            "--write-pairs",
            str(pairs),
        ],
        env=ENV,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        if address.exists():
            return proc, address.read_text().strip(), pairs
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("simulator did not start")


def bench_fetch(tmp: Path) -> dict:
    sim, base_url, pairs = start_simulator(tmp)
    try:
        one = tmp / "one.csv"
        with open(pairs) as src, open(one, "w") as dst:
            dst.writelines([next(src), next(src)])

        def export(pairs_file: Path, *extra: str):
            return lambda i: [
                PYTHON,
                "-m",
                "nsml_etl.cli",
                "export",
                "--pairs",
                str(pairs_file),
                "--base-url",
                base_url,
                "--concurrency",
                str(CONCURRENCY),
                "--db",
                f"sqlite:///{tmp}/fetch-{uuid.uuid4().hex}.db",
                *extra,
            ]

        # One run, all runs, and all runs with their node lists take turns, as in bench_load;
        # fetch rounds are cheap, so more.
        metrics = tmp / "nodes.prom"
        plain_metrics = tmp / "plain.prom"
        t_ones, t_alls, t_nodes = [], [], []
        for i in range(FETCH_REPEATS):
            t_ones.append(timed(export(one)(i))[0])
            t_alls.append(timed(export(pairs, "--metrics-file", str(plain_metrics))(i))[0])
            t_nodes.append(timed(export(pairs, "--nodes", "--metrics-file", str(metrics))(i))[0])
        t_one, t_all, t_node = min(t_ones), min(t_alls), min(t_nodes)
    finally:
        sim.terminate()
        sim.wait()
    bound = FETCH_RUNS * LATENCY / CONCURRENCY
    return {
        "runs": FETCH_RUNS,
        "t_one": t_one,
        "t_all": t_all,
        "bound": bound,
        "figure": (t_all - t_one) / bound,
        "target": 1.15,
        "t_nodes": t_node,
        "requests": requests_in(plain_metrics),
        "requests_nodes": requests_in(metrics),
        "nodes_time_ratio": (t_node - t_one) / (t_all - t_one),
    }


def requests_in(metrics_file: Path) -> int:
    """The API responses a run's --metrics-file counts (every status)."""
    total = 0
    for line in metrics_file.read_text().splitlines():
        if line.startswith("nsml_etl_requests{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def write_raw_runs(path: Path, count: int) -> None:
    rng = random.Random(7)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            run = {
                "runName": str(i % 5000 + 1),
                "projectId": f"proj{i // 5000:05d}",
                "projectName": "비전 연구팀",
                "status": rng.choice(["RUN_STATE_COMPLETED", "RUN_STATE_FAILED"]),
                "creator": f"ncp-user-{rng.randint(1, 99999)}",
                "engFullName": "[GPU] V100 1EA, 8vCPU, 90GB Mem",
                "gpuSvrCode": 205,
                "imageType": "BASE",
                "imagePath": "nvcr.io/nvidia/pytorch:23.10-py3",
                "command": f"python train.py --seed {i}",
                "note": "bench",
                "envs": {f"KEY_{k:02d}": f"value-{i}-{k}" for k in range(ENV_KEYS)},
            }
            handle.write(json.dumps(run, ensure_ascii=False) + "\n")


def fresh_url(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp}/load-{uuid.uuid4().hex}.db"
    if kind == "duckdb":
        return f"duckdb:///{tmp}/load-{uuid.uuid4().hex}.duckdb"
    server = sa.make_url(os.environ["NSML_ETL_TEST_POSTGRES_URL"])
    name = f"nsml_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def bench_load(kind: str, tmp: Path, raw: Path, runs: int) -> dict:
    """Baseline, inserts and updates take turns in each round, so a noisy minute on this
    shared machine weighs on all three rather than on one; each keeps its best round."""
    t_base, rss_base, t_insert, rss_insert, t_update, rss_update = [], [], [], [], [], []
    for _ in range(REPEATS):
        t, rss = timed([PYTHON, str(HERE / "baseline_to_sql.py"), str(raw), fresh_url(kind, tmp)])
        t_base.append(t)
        rss_base.append(rss)
        url = fresh_url(kind, tmp)
        load = [PYTHON, "-m", "nsml_etl.cli", "load", str(raw), "--db", url]
        t, rss = timed(load)
        t_insert.append(t)
        rss_insert.append(rss)
        t, rss = timed(load)  # the same keys again: every row an update
        t_update.append(t)
        rss_update.append(rss)
    base = min(t_base)
    return {
        "db": kind,
        "runs": runs,
        "t_baseline": base,
        "rss_baseline_mb": max(rss_base),
        "t_insert": min(t_insert),
        "t_update": min(t_update),
        "insert_ratio": min(t_insert) / base,
        "update_ratio": min(t_update) / base,
        "rss_mb": max(rss_insert + rss_update),
        "target_ratio": 1.0,
        "target_rss_mb": 150,
    }


def bench_pairs_memory(tmp: Path, count: int) -> dict:
    """Peak RSS of validating a large pairs file (--dry-run): pairs spill to disk."""
    path = tmp / f"pairs-{count}.csv"
    with open(path, "w") as handle:
        handle.write("project_id,run_name\n")
        handle.writelines(f"proj{i % 1000:04d},{i}\n" for i in range(count))
    _, rss = timed(
        [
            PYTHON,
            "-m",
            "nsml_etl.cli",
            "export",
            "--pairs",
            str(path),
            "--dry-run",
            "--db",
            f"sqlite:///{tmp}/dry.db",
        ]
    )
    return {"pairs": count, "bytes": path.stat().st_size, "rss_mb": rss}


def main() -> None:
    results: dict = {"fetch": None, "load": []}
    with tempfile.TemporaryDirectory(prefix="nsml-bench-") as tmp_name:
        tmp = Path(tmp_name)
        results["fetch"] = fetch = bench_fetch(tmp)
        print(
            f"fetch  {FETCH_RUNS} runs @ {LATENCY * 1000:.0f} ms, {CONCURRENCY} workers: "
            f"{fetch['figure']:.2f} x bound (target <= 1.15; bound {fetch['bound']:.2f}s)"
        )
        print(
            f"nodes  the same with --nodes: {fetch['requests_nodes']} requests against "
            f"{fetch['requests']}, {fetch['t_nodes']:.2f}s against {fetch['t_all']:.2f}s "
            f"({fetch['nodes_time_ratio']:.2f} x the fetch time beyond one run's)"
        )
        raw = tmp / "raw.jsonl"
        write_raw_runs(raw, LOAD_RUNS)
        small = tmp / "raw-small.jsonl"
        write_raw_runs(small, LOAD_RUNS // 4)
        kinds = (
            ["sqlite"]
            + (["duckdb"] if importlib.util.find_spec("duckdb_engine") else [])
            + (["postgresql"] if os.environ.get("NSML_ETL_TEST_POSTGRES_URL") else [])
        )
        for kind in kinds:
            row = bench_load(kind, tmp, raw, LOAD_RUNS)
            results["load"].append(row)
            print(
                f"load   {LOAD_RUNS} runs into {kind}: insert {row['insert_ratio']:.2f} x, "
                f"update {row['update_ratio']:.2f} x baseline (target <= 1.0); peak RSS "
                f"{row['rss_mb']:.0f} MB (target <= 150; baseline {row['rss_baseline_mb']:.0f})"
            )
        small_row = bench_load("sqlite", tmp, small, LOAD_RUNS // 4)
        results["load_small"] = small_row
        print(
            f"memory {LOAD_RUNS // 4} runs: peak RSS {small_row['rss_mb']:.0f} MB "
            f"(constant in the number of runs if close to the {LOAD_RUNS}-run figure)"
        )
        results["pairs_memory"] = [bench_pairs_memory(tmp, n) for n in (1_000_000, 3_000_000)]
        for row in results["pairs_memory"]:
            print(
                f"pairs  {row['pairs']} pairs ({row['bytes'] / 1e6:.0f} MB file), --dry-run: "
                f"peak RSS {row['rss_mb']:.0f} MB"
            )
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print_table(summary_rows(results))
    print(f"\nwritten to {HERE / 'results.json'}")


def summary_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, result, target, met) for every figure the issue sets a target for."""

    def met(ok: bool) -> str:
        return "yes" if ok else "NO"

    fetch = results["fetch"]
    rows = [
        (
            f"fetch {fetch['runs']} runs: (t(all) - t(1)) / bound",
            f"{fetch['figure']:.2f}",
            "<= 1.15",
            met(fetch["figure"] <= fetch["target"]),
        )
    ]
    rows.append(
        (
            f"--nodes: requests, time (t(all) - t(1)) against without ({fetch['requests']} req)",
            f"{fetch['requests_nodes']} req, {fetch['nodes_time_ratio']:.2f} x",
            "none",
            "-",
        )
    )
    for row in results["load"]:
        for kind in ("insert", "update"):
            ratio = row[f"{kind}_ratio"]
            rows.append(
                (
                    f"load {row['runs']} runs, {row['db']}, {kind}s / to_sql baseline",
                    f"{ratio:.2f}",
                    "<= 1.00",
                    met(ratio <= row["target_ratio"]),
                )
            )
        rows.append(
            (
                f"peak RSS of that load (baseline {row['rss_baseline_mb']:.0f} MB)",
                f"{row['rss_mb']:.0f} MB",
                "<= 150 MB",
                met(row["rss_mb"] <= 150),
            )
        )
    small = results["load_small"]
    rows.append(
        (
            f"peak RSS of a {small['runs']}-run load (constant?)",
            f"{small['rss_mb']:.0f} MB",
            "~ same",
            "-",
        )
    )
    for row in results["pairs_memory"]:
        rows.append(
            (
                f"peak RSS, --dry-run of {row['pairs']} pairs",
                f"{row['rss_mb']:.0f} MB",
                "constant",
                "-",
            )
        )
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("figure", "result", "target", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    csv.field_size_limit(1 << 20)
    main()
