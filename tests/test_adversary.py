"""Findings of an adversarial review of issue 12 ("No run lost, whatever the data, the database
or the signal"): each test is one way a hostile input or environment broke a promise of the
README, kept as a regression test now that the product is fixed; the one that stays
``xfail(strict=True)`` is a documented limit (its reason says which).

Every test goes through the real CLI against real databases (the ``db_url`` fixture) and the
simulator; each names in its reason what goes wrong today and what the README promises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import _server_database, fetch_rows, write_pairs

from nsml_etl.cli import main
from nsml_etl.errors import EXIT_INTERNAL


@pytest.fixture
def pg_url():
    yield from _server_database("postgresql")


@pytest.fixture
def mariadb_url():
    yield from _server_database("mysql")


def _kind(db_url: str) -> str:
    return db_url.split(":")[0].split("+")[0]


def _cli(*args: str):
    """The CLI in-process, catching what escapes it: a traceback must never reach a user, so a
    test asserts on ``result.exception`` instead of crashing itself."""
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def _not_a_bug(result) -> None:
    """The command ended as designed, not as a bug: the CLI turns every exception into an exit,
    so what shows a bug is exit 70 and its message (a traceback never reaches the user)."""
    assert result.exit_code != EXIT_INTERNAL, result.output
    assert "this is a bug" not in result.stderr and "Traceback" not in result.output


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _run(project_id: str, run_name: str, **fields) -> str:
    """A plain run object as one JSON line (ASCII escapes: NUL and surrogates stay escapes)."""
    return json.dumps(
        {
            "projectId": project_id,
            "runName": run_name,
            "status": "S",
            "note": f"note {run_name}",
            "envs": {"A": run_name},
            **fields,
        }
    )


def _stored_names(db_url: str, table: str = "nsml_runs") -> set[str]:
    return {r["run_name"] for r in fetch_rows(db_url, f"SELECT run_name FROM {table}")}  # noqa: S608


def _batches(db_url: str) -> list[dict]:
    return fetch_rows(
        db_url, "SELECT id, status, exported, failed, error FROM nsml_export_batches ORDER BY id"
    )


def _export(sim, db_url: str, tmp_path: Path, pairs, *extra: str):
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    return _cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--backoff-initial",
        "0.01",
        "--failures-out",
        str(tmp_path / "failed.csv"),
        *extra,
    )


# -- failed pairs that the bookkeeping cannot record -----------------------------------------


# Regression (fixed on main): PostgreSQL: a run whose runName (or projectId) holds U+0000, from
# a load file or from the run list of `export --all`, is screened as a failed pair, but
# recording that failure in nsml_export_failures fails too (text cannot hold NUL): exit 4
# 'recording the batch failed: DataError', the batch stays 'running' forever, the failure is
# neither listed nor recorded, and every rerun does the same
@pytest.mark.parametrize("command", ["load", "export --all"])
def test_a_nul_in_a_run_name_is_a_recorded_failed_pair_on_postgresql(
    command, credentials, make_simulator, pg_url, tmp_path
):
    db_url = pg_url
    runs = [("p", "g1"), ("p", "nul\x00run"), ("p\x00", "r"), ("p", "g2")]
    if command == "load":
        path = _write_lines(tmp_path / "runs.jsonl", [_run(*pair) for pair in runs])
        result = _cli("load", str(path), "--db", db_url)
    else:
        sim = make_simulator(projects=0)
        for pair in runs:
            sim.put_run(*pair, json.loads(_run(*pair)))
        result = _cli("export", "--all", "--db", db_url, "--base-url", sim.base_url)
    _not_a_bug(result)
    assert _stored_names(db_url) == {"g1", "g2"}
    assert result.exit_code == 1, result.output
    assert "Failed pairs (2)" in result.stdout
    assert [b["status"] for b in _batches(db_url)] == ["partial"]
    assert len(fetch_rows(db_url, "SELECT * FROM nsml_export_failures")) == 2


# Regression (fixed on main): a load line whose runName holds a lone surrogate (\\ud800, legal
# as a JSON escape) is refused as a failed pair, but writing that pair into
# nsml_export_failures raises  UnicodeEncodeError: a Python traceback on every database, the
# batch stays 'running'
def test_a_lone_surrogate_in_a_loaded_run_name_is_a_failed_pair_not_a_traceback(db_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            _run("p", "g1"),
            '{"projectId": "p", "runName": "s\\ud800"}',
            '{"projectId": "p\\udfff", "runName": "r"}',
            _run("p", "g2"),
        ],
    )
    result = _cli("load", str(path), "--db", db_url)
    _not_a_bug(result)
    assert result.exit_code == 1, result.output
    assert "surrogate" in result.stdout
    assert _stored_names(db_url) == {"g1", "g2"}
    assert [b["status"] for b in _batches(db_url)] == ["partial"]


# -- values the transform does not expect ----------------------------------------------------


# Regression (fixed on main): gpuSvrCode '\u00b2' (superscript two) passes str.isdigit() but
# int() refuses it:  ValueError escapes as a traceback, export and load alike, and no run of the
# export lands  (the pending chunk is never written), instead of one failed pair
@pytest.mark.parametrize("command", ["export", "load"])
def test_a_digit_like_gpu_svr_code_is_one_failed_pair(
    command, credentials, make_simulator, sqlite_url, tmp_path
):
    good = [{"projectId": "p", "runName": str(n), "envs": {}} for n in range(5)]
    bad = {"projectId": "p", "runName": "sup", "gpuSvrCode": "\u00b2"}
    if command == "export":
        sim = make_simulator(projects=0)
        for body in [*good, bad]:
            sim.put_run(body["projectId"], body["runName"], body)
        result = _export(
            sim,
            sqlite_url,
            tmp_path,
            [("p", b["runName"]) for b in [*good, bad]],
            "--concurrency",
            "1",
        )
    else:
        path = _write_lines(tmp_path / "runs.jsonl", [json.dumps(b) for b in [*good, bad]])
        result = _cli("load", str(path), "--db", sqlite_url)
    _not_a_bug(result)
    assert result.exit_code == 1, result.output
    assert "gpuSvrCode" in result.stdout
    assert _stored_names(sqlite_url) == {b["runName"] for b in good}


# Regression (fixed on main): load of a file whose name is not UTF-8 (a Latin-1
# 'caf\\xe9.jsonl', common on old shares):  its name goes into the batch options as a lone
# surrogate and the INSERT raises  UnicodeEncodeError: a traceback and nothing lands, on every
# database
def test_a_load_file_with_a_non_utf8_name_loads(db_url, tmp_path):
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jsonl"))
    _write_lines(path, [_run("p", "r1")])
    result = _cli("load", str(path), "--db", db_url)
    _not_a_bug(result)
    assert result.exit_code == 0, result.output
    assert _stored_names(db_url) == {"r1"}


# -- the env column cap ----------------------------------------------------------------------


# Regression (fixed on main): two loads at once with different --max-env-columns: the one with
# the higher cap promotes a waiting key (adds its column, fills it from the stored envs)
# between the other's schema step (prepare) and its chunk write (upsert), which builds its rows
# from the map it read before: its runs land with NULL in the new column although their envs
# hold the key  (seen by chance in 1 of 2 concurrent MariaDB runs; made deterministic here)
def test_a_key_promoted_by_a_concurrent_load_is_filled_in_every_run(db_url, tmp_path, monkeypatch):
    from nsml_etl.warehouse.store import RunStore

    first = _write_lines(
        tmp_path / "first.jsonl",
        ['{"projectId": "p", "runName": "r0", "envs": {"A": "a0", "B": "b0"}}'],
    )
    assert _cli("load", str(first), "--db", db_url, "--max-env-columns", "1").exit_code == 0
    other = _write_lines(
        tmp_path / "other.jsonl", ['{"projectId": "p", "runName": "r2", "envs": {"C": "c2"}}']
    )
    original = RunStore.upsert

    def upsert_after_the_other_load(self, *args, **kwargs):
        # The other export (a separate process, cap 10) runs between our prepare and upsert.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nsml_etl.cli",
                "load",
                str(other),
                "--db",
                db_url,
                "--max-env-columns",
                "10",
            ],
            capture_output=True,
        )
        assert done.returncode == 0, done.stderr
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "upsert", upsert_after_the_other_load)
    second = _write_lines(
        tmp_path / "second.jsonl",
        ['{"projectId": "p", "runName": "r1", "envs": {"A": "a1", "B": "b1"}}'],
    )
    result = _cli("load", str(second), "--db", db_url, "--max-env-columns", "1")
    assert result.exit_code == 0, result.output
    rows = {r["run_name"]: r for r in fetch_rows(db_url, "SELECT * FROM nsml_runs")}
    assert rows["r0"]["env_b"] == "b0"  # filled when the key got its column
    assert rows["r1"]["env_b"] == "b1"  # its envs hold B: so must its column


def _wide_run(project_id: str, run_name: str, env_keys: int, fields: int) -> str:
    """A run whose every text value is 40 bytes: the most a MariaDB row keeps inline for each."""
    body = {
        "projectId": project_id,
        "runName": run_name,
        **{
            f: "x" * 40
            for f in (
                "projectName",
                "status",
                "creator",
                "engFullName",
                "imageType",
                "imagePath",
                "command",
                "note",
            )
        },
        "envs": {f"K{i:03d}": "v" * 40 for i in range(env_keys)},
        **{f"extra{i}": "f" * 40 for i in range(fields)},
    }
    return json.dumps(body)


# Regression (fixed on main): MariaDB, default --max-env-columns 150 (documented as fitting
# every supported database  'with room for undocumented fields'): a run with 150 env values and
# 40 undocumented fields of 40 bytes each, or one whose project id and run name are 255 four-
# byte characters, is refused 'Row size too large (> 8126)' and can never be stored, while
# SQLite and PostgreSQL store it; undocumented fields are not capped at all
def test_the_default_env_column_cap_fits_a_mariadb_row(mariadb_url, tmp_path):
    emoji = "\U0001f600" * 255
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            _wide_run("p", "fields", 150, 40),
            _wide_run(emoji, emoji, 150, 0),
        ],
    )
    result = _cli("load", str(path), "--db", mariadb_url)
    assert result.exit_code == 0, result.output
    assert _stored_names(mariadb_url) == {"fields", emoji}


# -- views and report ------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason=(
        "a documented limit (README, NUL): SQLite's JSON functions stop at U+0000, so on SQLite "
        "nsml_run_envs cuts keys and values there, while envs and the env columns keep them whole"
    ),
)
def test_nsml_run_envs_keeps_nul_on_sqlite(sqlite_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            json.dumps(
                {"projectId": "p", "runName": "r", "envs": {"N": "a\x00b", "K\x00x": "v", "K": "k"}}
            )
        ],
    )
    assert _cli("load", str(path), "--db", sqlite_url).exit_code == 0
    assert _cli("views", "--db", sqlite_url).exit_code == 0
    (row,) = fetch_rows(sqlite_url, "SELECT env_n FROM nsml_runs")
    assert row["env_n"] == "a\x00b"
    view = {
        (r["env_key"], r["value"])
        for r in fetch_rows(sqlite_url, "SELECT env_key, value FROM nsml_run_envs")
    }
    assert view == {("N", "a\x00b"), ("K\x00x", "v"), ("K", "k")}


def test_nsml_run_envs_values_read_as_in_the_env_columns(db_url, tmp_path):
    """Strings and numbers exactly; objects and lists as the same JSON (the README: their
    spacing is the database's)."""
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            '{"projectId": "p", "runName": "r", "envs": {"O": {"x": [1, 2.50]}, "L": [1, "a"],'
            ' "S": "s", "T": true, "F": 1.50, "E": 1e400, "Z": -0.0}}'
        ],
    )
    assert _cli("load", str(path), "--db", db_url).exit_code == 0
    assert _cli("views", "--db", db_url).exit_code == 0
    (row,) = fetch_rows(db_url, "SELECT * FROM nsml_runs")
    view = {
        r["env_key"]: r["value"]
        for r in fetch_rows(db_url, "SELECT env_key, value FROM nsml_run_envs")
    }
    columns = {key: row[f"env_{key.lower()}"] for key in view}
    # DuckDB's JSON reader writes a number back in its own spelling (README, DuckDB): 1.5.
    respelled = "F" if db_url.startswith("duckdb") else ""
    assert {k: v for k, v in view.items() if k not in "OL" + respelled} == {
        k: v for k, v in columns.items() if k not in "OL" + respelled
    }
    for key in respelled:
        assert float(view[key]) == float(columns[key])
    for key in "OL":
        assert json.loads(view[key]) == json.loads(columns[key])


# Regression (fixed on main): PostgreSQL: once one stored run's envs holds a NUL value (kept, as
# documented, as the JSON  escape \\u0000), nsml_env_key_catalog fails on every SELECT
# (json_each_text: '\\u0000  cannot be converted to text') and `nsml-etl report` (text and
# --html) dies with a Python traceback, exit 1, for the whole table
def test_report_and_env_key_catalog_survive_a_nul_in_envs_on_postgresql(pg_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            json.dumps({"projectId": "p", "runName": "r1", "envs": {"N": "a\x00b"}}),
            json.dumps({"projectId": "p", "runName": "r2", "envs": {"N": "c"}}),
        ],
    )
    assert _cli("load", str(path), "--db", pg_url).exit_code == 0
    result = _cli("report", "--db", pg_url, "--html", str(tmp_path / "report.html"))
    _not_a_bug(result)
    assert result.exit_code == 0, result.output
    catalog = fetch_rows(pg_url, "SELECT env_key, runs FROM nsml_env_key_catalog")
    assert catalog == [{"env_key": "N", "runs": 2}]


# Regression (fixed on main): PostgreSQL: a table written before this change holds envs like
# '{\"LR\":Infinity}' (what issue 12 says 1e400 became); nothing repairs them on upgrade, and
# nsml_run_envs,  nsml_env_key_catalog and `nsml-etl report` then fail on every query (invalid
# input syntax for type json): a traceback. The issue asks that views and reports never crash
# on any stored envs (SQLite and MariaDB skip such rows)
def test_report_survives_envs_stored_by_an_earlier_version_on_postgresql(pg_url, tmp_path):
    path = _write_lines(tmp_path / "runs.jsonl", [_run("p", "old"), _run("p", "new")])
    assert _cli("load", str(path), "--db", pg_url).exit_code == 0
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # as nsml-etl 0.x wrote {"LR": 1e400}
        conn.exec_driver_sql(
            "UPDATE nsml_runs SET envs = '{\"LR\":Infinity}' WHERE run_name = 'old'"
        )
    engine.dispose()
    result = _cli("report", "--db", pg_url)
    _not_a_bug(result)
    assert result.exit_code == 0, result.output
    assert {r["run_name"] for r in fetch_rows(pg_url, "SELECT run_name FROM nsml_run_envs")} >= {
        "new"
    }


# -- errors misread as transient -------------------------------------------------------------


# Regression (fixed on main): MariaDB: one run larger than max_allowed_packet (a 17 MB note;
# MariaDB's default is  16 MB) makes the server drop the connection (2013/2006), which counts as
# transient: the chunk is retried 3 times and the load stops with exit 4, none of the chunk's
# good runs land, and every rerun does the same: one bad run takes its chunk and the export
# down
def test_a_run_over_max_allowed_packet_fails_alone_on_mariadb(mariadb_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [_run("p", "g1"), _run("p", "big", note="x" * (17 * 1024 * 1024)), _run("p", "g2")],
    )
    result = _cli("load", str(path), "--db", mariadb_url)
    assert result.exit_code == 1, result.output
    assert "big" in result.stdout
    assert _stored_names(mariadb_url) == {"g1", "g2"}


# Regression (fixed on main): MariaDB, --max-env-columns raised to 400 (the README allows it: 'a
# run whose row would pass 8,126 bytes then fails alone'): ALTER TABLE keeps adding columns
# until InnoDB refuses the 373rd, but at 372 env columns no row can be written any more, not
# even a run with one  1-byte env value: every run of every later export and load is refused
# 'Row size too large', for good (columns are never dropped): the table is wedged
def test_raising_the_cap_on_mariadb_never_wedges_the_table(mariadb_url, tmp_path):
    many = _write_lines(
        tmp_path / "many.jsonl",
        [
            json.dumps(
                {"projectId": "p", "runName": "many", "envs": {f"K{i}": "v" for i in range(400)}}
            )
        ],
    )
    _cli("load", str(many), "--db", mariadb_url, "--max-env-columns", "400")
    small = _write_lines(tmp_path / "small.jsonl", [_run("p", "small")])
    result = _cli("load", str(small), "--db", mariadb_url)
    assert result.exit_code == 0, result.output
    assert "small" in _stored_names(mariadb_url)


# -- archive records -------------------------------------------------------------------------


# Regression (fixed on main): load of an archive record whose fetchedAt carries a UTC offset
# ('2024-01-01T09:00:00+09:00', e.g. from another tool or a hand-edited archive): the offset is
# dropped and 09:00 is stored as if it were UTC, in fetched_at and the history's valid_from,
# where the README promises UTC
def test_an_archived_fetched_at_with_an_offset_is_stored_as_utc(db_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            json.dumps(
                {
                    "projectId": "p",
                    "runName": "r",
                    "fetchedAt": "2024-01-01T09:00:00+09:00",
                    "response": {"projectId": "p", "runName": "r", "envs": {}},
                }
            )
        ],
    )
    assert _cli("load", str(path), "--db", db_url).exit_code == 0
    (row,) = fetch_rows(db_url, "SELECT fetched_at FROM nsml_runs")
    assert str(row["fetched_at"]).startswith("2024-01-01 00:00:00")


# -- signals ---------------------------------------------------------------------------------


# Regression (fixed on main): a chunk the database refuses run by run is bisected with 2N-1
# transactions (4,000 refused runs: 45 s on SQLite, 137 s on PostgreSQL, against well under a
# second for a good chunk),  and SIGTERM/SIGINT are not looked at during the bisection: two
# signals at once (coreutils timeout) leave the process running until the whole chunk is
# bisected, so `timeout -k` kills it and the batch stays 'running'
def test_two_signals_stop_a_load_within_seconds_while_a_chunk_is_bisected(sqlite_url, tmp_path):
    seed = _write_lines(tmp_path / "seed.jsonl", [_run("p", "seed")])
    assert _cli("load", str(seed), "--db", sqlite_url).exit_code == 0
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:  # stands for any rule that refuses every run of a chunk
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON nsml_runs WHEN NEW.note = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused by rule'); END"
        )
    engine.dispose()
    path = _write_lines(
        tmp_path / "bad.jsonl", [_run("p", f"r{i}", note="bad") for i in range(1000)]
    )
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nsml_etl.cli", "load", str(path), "--db", sqlite_url, "-v"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "writing its halves apart" not in stderr_path.read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        proc.communicate(timeout=120)
        assert proc.returncode == 143
        assert time.monotonic() - signalled < 5, "still bisecting long after the signals"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_undocumented_fields_at_any_scale_on_postgresql(pg_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            json.dumps(
                {"projectId": "p", "runName": f"r{j}", **{f"field{j}x{i}": "v" for i in range(100)}}
            )
            for j in range(17)
        ],
    )
    result = _cli("load", str(path), "--db", pg_url)
    assert result.exit_code == 0, result.output
    assert _stored_names(pg_url) == {f"r{j}" for j in range(17)}


def test_env_key_catalog_counts_null_as_no_value_on_mariadb(mariadb_url, tmp_path):
    path = _write_lines(
        tmp_path / "runs.jsonl",
        [
            '{"projectId": "p", "runName": "r1", "envs": {"N": null}}',
            '{"projectId": "p", "runName": "r2", "envs": {"N": null}}',
        ],
    )
    assert _cli("load", str(path), "--db", mariadb_url).exit_code == 0
    assert _cli("views", "--db", mariadb_url).exit_code == 0
    assert fetch_rows(
        mariadb_url, "SELECT env_key, runs, distinct_values FROM nsml_env_key_catalog"
    ) == [{"env_key": "N", "runs": 2, "distinct_values": 0}]
