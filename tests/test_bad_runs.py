"""One run that a database cannot store fails alone, with the database's reason; the rest of
its chunk lands. Every case goes through the CLI, on every database."""

from __future__ import annotations

import csv
import json
import random
import string

import pytest
import sqlalchemy as sa
from conftest import fetch_rows, write_pairs

from nsml_etl.testing.simulator import RawJson
from nsml_etl.warehouse.families.postgresql import NUL_REPLACEMENT
from nsml_etl.warehouse.store import RunStore

GOOD = [("p", str(n)) for n in range(1, 9)]


def _body(project_id: str, run_name: str, **fields) -> dict:
    return {
        "projectId": project_id,
        "runName": run_name,
        "status": "RUN_STATE_COMPLETED",
        "note": f"run {run_name}",
        "envs": {"A": run_name},
        **fields,
    }


def _export(run_cli, sim, db_url, tmp_path, pairs, *extra):
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    return run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--backoff-initial",
        "0.01",
        "--chunk-size",
        "100",
        "--failures-out",
        str(tmp_path / "failed.csv"),
        *extra,
    )


def _kind(db_url: str) -> str:
    return db_url.split(":")[0].split("+")[0]


def _stored(db_url: str) -> dict[tuple[str, str], dict]:
    rows = fetch_rows(db_url, "SELECT * FROM nsml_runs")
    return {(r["project_id"], r["run_name"]): r for r in rows}


def _assert_failed_alone(result, db_url, tmp_path, failed: dict[tuple[str, str], str]):
    """Exit 1, each failed pair named with its reason in the summary, the failures table and
    --failures-out; no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    stored_failures = {
        (r["project_id"], r["run_name"]): r["message"]
        for r in fetch_rows(
            db_url, "SELECT project_id, run_name, message FROM nsml_export_failures"
        )
    }
    with open(tmp_path / "failed.csv", encoding="utf-8", newline="") as handle:
        written = {(r["project_id"], r["run_name"]): r["reason"] for r in csv.DictReader(handle)}
    for pair, words in failed.items():
        assert words in stored_failures[pair], stored_failures
        assert stored_failures[pair] == written[pair]
        assert words in result.stdout
    assert set(stored_failures) == set(failed) == set(written)


def test_values_and_keys_each_database_cannot_hold_fail_alone(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    """Regression: on PostgreSQL a NUL ended in a traceback, exit 1, and none of the good runs of
    its chunk landed; a 3,000-character env key (PostgreSQL's index limit), an 800-character key
    and a 256-character run name (MariaDB) did the same."""
    kind = _kind(db_url)
    sim = make_simulator(projects=0)
    for pair in GOOD:
        sim.put_run(*pair, _body(*pair))
    long_name = "r" * 256
    bad = {
        ("p", "nul"): _body("p", "nul", note="a\x00b", envs={"A": "x\x00y", "B": "ok"}),
        ("p", "nulkey"): _body("p", "nulkey", envs={"K\x00": "v"}),
        ("p", "key3000"): _body("p", "key3000", envs={"K" * 3000: "v"}),
        ("p", "key800"): _body("p", "key800", envs={"L" * 800: "v"}),
        ("p", long_name): _body("p", long_name),
        ("p", "emptyfield"): _body("p", "emptyfield", **{"": "nameless"}),
    }
    for pair, body in bad.items():
        sim.put_run(*pair, body)
    pairs = GOOD[:4] + list(bad) + GOOD[4:]  # the bad runs in the middle of one chunk
    result = _export(run_cli, sim, db_url, tmp_path, pairs)

    expected_failures = {
        "sqlite": {},
        "duckdb": {},  # its keys and text hold anything, NUL included
        "postgresql": {
            ("p", "nulkey"): "holds U+0000 (NUL)",
            ("p", "key3000"): "PostgreSQL indexes hold at most",
        },
        "mysql": {
            ("p", "key3000"): "MySQL/MariaDB keys hold at most 700",
            ("p", "key800"): "MySQL/MariaDB keys hold at most 700",
            ("p", long_name): "MySQL/MariaDB keys hold at most 255",
        },
    }[kind]
    if expected_failures:
        _assert_failed_alone(result, db_url, tmp_path, expected_failures)
    else:
        assert result.exit_code == 0, result.output
    stored = _stored(db_url)
    assert set(stored) == (set(GOOD) | set(bad)) - set(expected_failures)
    for pair in GOOD:
        assert stored[pair]["note"] == f"run {pair[1]}"

    nul = stored[("p", "nul")]
    assert json.loads(nul["envs"]) == {"A": "x\x00y", "B": "ok"}  # envs is exact everywhere
    assert "\\u0000" in nul["envs"]
    if kind == "postgresql":  # text columns cannot hold NUL: the documented replacement
        assert nul["note"] == f"a{NUL_REPLACEMENT}b" and nul["env_a"] == f"x{NUL_REPLACEMENT}y"
    else:
        assert nul["note"] == "a\x00b" and nul["env_a"] == "x\x00y"
    mapping = {
        r["field"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT field, column_name FROM nsml_field_columns")
    }
    assert mapping[""].startswith("field_")
    assert stored[("p", "emptyfield")][mapping[""]] == "nameless"

    # A rerun changes nothing and fails the same runs the same way.
    rerun = _export(run_cli, sim, db_url, tmp_path, pairs)
    assert rerun.exit_code == result.exit_code, rerun.output
    assert _stored(db_url).keys() == stored.keys()

    # Views and the report read every stored envs, NUL included, on every database.
    assert run_cli("views", "--db", db_url).exit_code == 0
    long_format = {
        (r["run_name"], r["env_key"]): r["value"]
        for r in fetch_rows(db_url, "SELECT run_name, env_key, value FROM nsml_run_envs")
    }
    nul_value = f"x{NUL_REPLACEMENT}y" if kind == "postgresql" else "x\x00y"
    if kind != "sqlite":  # SQLite's JSON functions stop at a NUL (see README)
        assert long_format[("nul", "A")] == nul_value
    assert long_format[("nul", "B")] == "ok"
    report = run_cli("report", "--db", db_url, "--format", "json")
    assert report.exit_code == 0, report.output


@pytest.fixture
def refuse_note(db_url):
    """A database rule that refuses one run's row (a CHECK constraint, or a trigger on SQLite),
    standing for any data error the checks before writing do not know about."""

    if db_url.startswith("duckdb"):
        pytest.skip("DuckDB has no triggers and adds no CHECK constraint to an existing table")

    def install() -> None:
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            if db_url.startswith("sqlite"):
                conn.exec_driver_sql(
                    "CREATE TRIGGER refuse BEFORE INSERT ON nsml_runs "
                    "WHEN NEW.note = 'refuse me' BEGIN SELECT RAISE(ABORT, 'refused by rule'); END"
                )
            else:
                conn.exec_driver_sql(
                    "ALTER TABLE nsml_runs ADD CONSTRAINT refuse "
                    "CHECK (note IS NULL OR note <> 'refuse me')"
                )
        engine.dispose()

    return install


@pytest.mark.parametrize("command", ["export", "load"])
def test_a_chunk_refused_for_one_runs_data_is_split_and_the_rest_lands(
    command, run_cli, credentials, make_simulator, db_url, tmp_path, refuse_note
):
    sim = make_simulator(projects=0)
    bodies = [_body("p", str(n)) for n in range(1, 41)]
    bodies[16]["note"] = bodies[29]["note"] = "refuse me"
    for body in bodies:
        sim.put_run(body["projectId"], body["runName"], body)
    pairs = [(b["projectId"], b["runName"]) for b in bodies]
    first = _export(run_cli, sim, db_url, tmp_path, pairs[:1])  # creates the table
    assert first.exit_code == 0, first.output
    refuse_note()

    if command == "export":
        result = _export(run_cli, sim, db_url, tmp_path, pairs)
    else:
        path = tmp_path / "runs.jsonl"
        path.write_text("".join(json.dumps(b) + "\n" for b in bodies), encoding="utf-8")
        result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    failures = fetch_rows(
        db_url, "SELECT project_id, run_name, message FROM nsml_export_failures ORDER BY run_name"
    )
    assert [(f["project_id"], f["run_name"]) for f in failures] == [("p", "17"), ("p", "30")]
    assert all("refused it" in f["message"] for f in failures)
    assert set(_stored(db_url)) == set(pairs) - {("p", "17"), ("p", "30")}
    history = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_run_history")[0]["n"]
    assert history == 38


def test_the_same_bad_runs_fail_by_the_databases_own_rule_when_not_checked_before(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch
):
    """Without the checks before writing, the database's own refusal finds the same runs."""
    if db_url.startswith(("sqlite", "duckdb")):
        pytest.skip("SQLite and DuckDB store these runs")
    monkeypatch.setattr(RunStore, "screen", lambda self, runs: (runs, []))
    sim = make_simulator(projects=0)
    for pair in GOOD:
        sim.put_run(*pair, _body(*pair))
    rng = random.Random(7)  # incompressible: PostgreSQL compresses a repetitive key until it fits
    key = "".join(rng.choice(string.ascii_letters) for _ in range(3000))
    sim.put_run("p", "key3000", _body("p", "key3000", envs={key: "v"}))
    pairs = GOOD[:3] + [("p", "key3000")] + GOOD[3:]
    result = _export(run_cli, sim, db_url, tmp_path, pairs)
    label = "PostgreSQL" if db_url.startswith("postgresql") else "MySQL/MariaDB"
    _assert_failed_alone(result, db_url, tmp_path, {("p", "key3000"): f"{label} refused it"})
    assert set(_stored(db_url)) == set(GOOD)
    # Nothing half-made stays behind: the next export of good runs works.
    again = _export(run_cli, sim, db_url, tmp_path, GOOD)
    assert again.exit_code == 0, again.output


def test_numbers_stay_the_literals_the_api_sent(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    """Regression: {"LR": 1e400} was stored as Infinity, which is not JSON: PostgreSQL's
    envs::jsonb and the report crashed, SQLite's env views undercounted."""
    sim = make_simulator(projects=0)
    sim.put_run(
        "p",
        "1",
        RawJson(
            b'{"projectId": "p", "runName": "1", "envs": {"LR": 1e400, "M": 1.50, "S": "x"},'
            b' "score": -0.0}'
        ),
    )
    result = _export(run_cli, sim, db_url, tmp_path, [("p", "1")])
    assert result.exit_code == 0, result.output
    (row,) = fetch_rows(db_url, "SELECT * FROM nsml_runs")
    assert row["envs"] == '{"LR":1e400,"M":1.50,"S":"x"}'
    assert (row["env_lr"], row["env_m"], row["score"]) == ("1e400", "1.50", "-0.0")
    views = run_cli("views", "--db", db_url)
    assert views.exit_code == 0, views.output
    catalog = {r["env_key"] for r in fetch_rows(db_url, "SELECT * FROM nsml_env_key_catalog")}
    assert catalog == {"LR", "M", "S"}
    long_format = {
        r["env_key"]: r["value"]
        for r in fetch_rows(db_url, "SELECT env_key, value FROM nsml_run_envs")
    }
    # DuckDB's JSON reader writes a number back in its own spelling (README, DuckDB).
    m_literal = "1.5" if db_url.startswith("duckdb") else "1.50"
    assert long_format == {"LR": "1e400", "M": m_literal, "S": "x"}
    report = run_cli("report", "--db", db_url, "--format", "json")
    assert report.exit_code == 0, report.output


def test_run_names_a_pairs_file_refuses_are_refused_in_a_load_file_too(run_cli, db_url, tmp_path):
    """Control characters and lone surrogates in a load line's projectId or runName: that line
    fails alone, named by FILE:LINE, as a pairs file's would (a run an export could never
    fetch; no database stores a surrogate, PostgreSQL no NUL). Regression: the failure rows
    naming such runs failed to record (exit 4, a traceback for a surrogate)."""
    path = tmp_path / "runs.jsonl"
    lines = [
        json.dumps(_body("p", "1")),
        json.dumps(_body("p", "a\x00b")),
        json.dumps(_body("p\x00", "2")),
        '{"projectId": "p", "runName": "s\\ud800"}',
        json.dumps(_body("p", "3")),
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    failures = fetch_rows(db_url, "SELECT message FROM nsml_export_failures ORDER BY message")
    assert [f["message"].split(": ")[0] for f in failures] == [
        f"{path}:2",
        f"{path}:3",
        f"{path}:4",
    ]
    assert "control character" in failures[0]["message"]
    assert "lone UTF-16 surrogate" in failures[2]["message"]
    assert set(_stored(db_url)) == {("p", "1"), ("p", "3")}
    (batch,) = fetch_rows(db_url, "SELECT status FROM nsml_export_batches")
    assert batch["status"] == "partial"


def test_an_unexpected_error_is_one_line_and_exit_70_never_a_traceback(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path, monkeypatch
):
    sim = make_simulator(projects=1, runs_per_project=2)

    def broken(*_args, **_kwargs):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr("nsml_etl.warehouse.writer.build_frame", broken)  # the chunk's rows
    result = _export(run_cli, sim, sqlite_url, tmp_path, sim.pairs())
    assert result.exit_code == 70
    assert result.stderr.startswith("Error: unexpected RuntimeError: something nobody foresaw;")
    assert "second line" not in result.stderr and "Traceback" not in result.output
