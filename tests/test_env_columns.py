"""Env keys at any scale: columns up to --max-env-columns, every key in nsml_run_envs, and a
schema change that fails never wedges a table. Through the CLI, on every database."""

from __future__ import annotations

import json

import sqlalchemy as sa
from conftest import fetch_rows, write_pairs

from nsml_etl.config import DEFAULT_MAX_ENV_COLUMNS
from nsml_etl.transform import CORE_COLUMNS
from nsml_etl.warehouse.schema import MAX_FIELD_COLUMNS, Schema


def _load(run_cli, db_url, tmp_path, bodies, *extra):
    path = tmp_path / f"runs{len(list(tmp_path.glob('runs*.jsonl')))}.jsonl"
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies), encoding="utf-8")
    return run_cli("load", str(path), "--db", db_url, "--log-format", "json", *extra)


def _events(result, name: str) -> list[dict]:
    return [e for e in map(json.loads, result.stderr.splitlines()) if e["event"] == name]


def _mapping(db_url) -> dict[str, str | None]:
    return {
        r["env_key"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    }


def _env_columns(db_url) -> set[str]:
    engine = sa.create_engine(db_url)
    try:
        return {
            c["name"]
            for c in sa.inspect(engine).get_columns("nsml_runs")
            if c["name"].startswith("env_")
        }
    finally:
        engine.dispose()


def _long_format(db_url) -> dict[tuple[str, str], str]:
    rows = fetch_rows(db_url, "SELECT run_name, env_key, value FROM nsml_run_envs")
    return {(r["run_name"], r["env_key"]): r["value"] for r in rows}


def test_keys_beyond_the_cap_wait_and_get_columns_when_it_is_raised(run_cli, db_url, tmp_path):
    bodies = [
        {
            "projectId": "p",
            "runName": str(n),
            "envs": {f"K{k:02d}": f"{n}-{k}" for k in range(n, n + 20)},
        }
        for n in range(5)
    ]
    result = _load(run_cli, db_url, tmp_path, bodies, "--max-env-columns", "10")
    assert result.exit_code == 0, result.output
    (warning,) = _events(result, "env_keys_without_column")
    assert warning["level"] == "warning"
    assert (warning["new"], warning["total"], warning["max_env_columns"]) == (14, 14, 10)
    mapping = _mapping(db_url)
    assert len(mapping) == 24
    with_column = {k: c for k, c in mapping.items() if c is not None}
    assert sorted(with_column) == [f"K{k:02d}" for k in range(10)]  # in allocation order
    assert _env_columns(db_url) == set(with_column.values())
    assert run_cli("views", "--db", db_url).exit_code == 0
    expected = {(str(n), f"K{k:02d}"): f"{n}-{k}" for n in range(5) for k in range(n, n + 20)}
    assert _long_format(db_url) == expected  # every key, with a column or not

    # Raising the cap gives the waiting keys columns, filled from the stored runs' envs, even
    # though this load brings none of those runs again.
    again = _load(
        run_cli,
        db_url,
        tmp_path,
        [{"projectId": "q", "runName": "1", "envs": {}}],
        "--max-env-columns",
        "30",
    )
    assert again.exit_code == 0, again.output
    assert not _events(again, "env_keys_without_column")
    mapping = _mapping(db_url)
    assert None not in mapping.values()
    rows = {
        r["run_name"]: r
        for r in fetch_rows(db_url, "SELECT * FROM nsml_runs WHERE project_id = 'p'")
    }
    for n in range(5):
        for key in mapping:  # a key the run lacks stays NULL
            assert rows[str(n)][mapping[key]] == expected.get((str(n), key))


def test_thousands_of_env_keys_land_on_every_database(run_cli, db_url, tmp_path):
    """Regression: 2,500 distinct keys across runs (or 1,700 in one run) failed on every
    database (SQLite 2,000 columns, PostgreSQL 1,600, MariaDB's row size at about 370)."""
    wide = {
        "projectId": "p",
        "runName": "wide",
        "envs": {f"KEY_{k}": "v" * 40 for k in range(1700)},
    }
    others = [
        {
            "projectId": "p",
            "runName": str(n),
            "envs": {f"OTHER_{n}_{k}": "x" * 40 for k in range(100)},
        }
        for n in range(8)
    ]
    result = _load(run_cli, db_url, tmp_path, [wide, *others])
    assert result.exit_code == 0, result.output
    mapping = _mapping(db_url)
    assert len(mapping) == 2500
    assert sum(c is not None for c in mapping.values()) == DEFAULT_MAX_ENV_COLUMNS
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == 9
    assert run_cli("views", "--db", db_url).exit_code == 0
    counts = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_run_envs")
    assert counts[0]["n"] == 2500
    rerun = _load(run_cli, db_url, tmp_path, [wide, *others])  # and again: nothing changes
    assert rerun.exit_code == 0, rerun.output
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_run_history")[0]["n"] == 9


def test_a_failed_alter_never_wedges_the_table(run_cli, db_url, tmp_path, monkeypatch):
    """Regression: on MariaDB the mapping row was committed before its ALTER, so after one
    failure every later export and load of that table exited 4, forever."""
    first = _load(
        run_cli, db_url, tmp_path, [{"projectId": "p", "runName": "1", "envs": {"A": "1"}}]
    )
    assert first.exit_code == 0, first.output
    real_add_column = Schema._add_column

    def refuse_env_b(self, conn, column):
        if column == "env_b":  # a real refusal from the database: a column that exists
            return real_add_column(self, conn, "project_id")
        return real_add_column(self, conn, column)

    monkeypatch.setattr(Schema, "_add_column", refuse_env_b)
    failing = _load(
        run_cli,
        db_url,
        tmp_path,
        [{"projectId": "p", "runName": "2", "envs": {"A": "2", "B": "b2"}}],
    )
    if db_url.startswith("duckdb"):
        # No savepoints: the refusal rolls the whole schema step back and stops the load
        # (README, DuckDB); nothing of it is kept, so nothing is wedged either.
        assert failing.exit_code == 4, failing.output
        assert _mapping(db_url) == {"A": "env_a"}
    else:
        assert failing.exit_code == 0, failing.output  # the run lands; B waits for a column
        assert _mapping(db_url) == {"A": "env_a", "B": None}  # nothing points at a missing one
        assert _events(failing, "env_keys_without_column")[0]["new"] == 1
    assert _env_columns(db_url) == {"env_a"}

    monkeypatch.setattr(Schema, "_add_column", real_add_column)
    healed = _load(
        run_cli, db_url, tmp_path, [{"projectId": "p", "runName": "3", "envs": {"C": "c3"}}]
    )
    assert healed.exit_code == 0, healed.output
    rows = {r["run_name"]: r for r in fetch_rows(db_url, "SELECT * FROM nsml_runs")}
    if db_url.startswith("duckdb"):
        assert _mapping(db_url) == {"A": "env_a", "C": "env_c"}
        assert (set(rows), rows["3"]["env_c"]) == ({"1", "3"}, "c3")
        return
    assert _mapping(db_url) == {"A": "env_a", "B": "env_b", "C": "env_c"}
    assert rows["2"]["env_b"] == "b2"  # filled from the stored envs
    assert (rows["1"]["env_b"], rows["3"]["env_c"]) == (None, "c3")


def test_a_mapping_table_from_before_waiting_keys_is_migrated(run_cli, db_url, tmp_path):
    """Tables made before keys could wait have NOT NULL column_name; they keep working."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        binary = " COLLATE utf8mb4_bin" if db_url.startswith("mysql") else ""
        varchar = "VARCHAR(64)" if db_url.startswith("mysql") else "TEXT"
        key = "VARCHAR(700)" if db_url.startswith("mysql") else "TEXT"
        conn.exec_driver_sql(
            f"CREATE TABLE nsml_env_columns (table_name {varchar}{binary} NOT NULL, "
            f"env_key {key}{binary} NOT NULL, column_name {varchar}{binary} NOT NULL, "
            "PRIMARY KEY (table_name, env_key), UNIQUE (table_name, column_name))"
        )
    engine.dispose()
    bodies = [{"projectId": "p", "runName": "1", "envs": {"A": "1", "B": "2", "C": "3"}}]
    result = _load(run_cli, db_url, tmp_path, bodies, "--max-env-columns", "2")
    assert result.exit_code == 0, result.output
    assert _mapping(db_url) == {"A": "env_a", "B": "env_b", "C": None}


def test_export_takes_the_cap_too(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=0)
    sim.put_run("p", "1", {"projectId": "p", "runName": "1", "envs": {"X": "1", "Y": "2"}})
    pairs = write_pairs(tmp_path / "pairs.csv", [("p", "1")])
    result = run_cli(
        "export",
        "--pairs",
        str(pairs),
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--max-env-columns",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert _mapping(db_url) == {"X": "env_x", "Y": None}
    assert "1 env keys of table nsml_runs have no column" in result.stderr


def test_a_cap_above_the_databases_column_limit_stops_at_the_limit(run_cli, sqlite_url, tmp_path):
    """SQLite allows 2,000 columns: a cap of 5,000 still lands every run, the rest waits."""
    body = {"projectId": "p", "runName": "1", "envs": {f"K{k}": "v" for k in range(2100)}}
    result = _load(run_cli, sqlite_url, tmp_path, [body], "--max-env-columns", "5000")
    assert result.exit_code == 0, result.output
    columns = len(fetch_rows(sqlite_url, "PRAGMA table_info(nsml_runs)"))
    assert columns == 2000
    waiting = [k for k, c in _mapping(sqlite_url).items() if c is None]
    assert len(waiting) == 2100 - (2000 - len(CORE_COLUMNS))


def test_undocumented_fields_beyond_their_cap_stay_in_the_fields_column(run_cli, db_url, tmp_path):
    """Fields get columns up to MAX_FIELD_COLUMNS; every field is in `fields` (JSON) too, so
    none is lost and the table never fills up. A table made before `fields` gets it added."""
    first = _load(run_cli, db_url, tmp_path, [{"projectId": "p", "runName": "0", "envs": {}}])
    assert first.exit_code == 0, first.output
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # as made by the previous version
        conn.exec_driver_sql("ALTER TABLE nsml_runs DROP COLUMN fields")
    engine.dispose()
    bodies = [
        {
            "projectId": "p",
            "runName": str(n),
            "envs": {},
            **{f"field{n}x{i}": f"v{n}.{i}" for i in range(10)},
            "score": 1.50,
        }
        for n in range(1, 5)
    ]
    result = _load(run_cli, db_url, tmp_path, bodies)
    assert result.exit_code == 0, result.output
    (warning,) = _events(result, "fields_without_column")
    assert (warning["new"], warning["max_field_columns"]) == (11, MAX_FIELD_COLUMNS)
    mapping = {
        r["field"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT field, column_name FROM nsml_field_columns")
    }
    assert len(mapping) == 41 and sum(c is not None for c in mapping.values()) == 30
    rows = {r["run_name"]: r for r in fetch_rows(db_url, "SELECT * FROM nsml_runs")}
    for body in bodies:
        row = rows[body["runName"]]
        undocumented = {k: v for k, v in body.items() if k not in ("projectId", "runName", "envs")}
        assert row["fields"] == json.dumps(undocumented, separators=(",", ":"))
        for field, value in undocumented.items():
            if mapping[field] is not None:
                assert row[mapping[field]] == (
                    value if isinstance(value, str) else json.dumps(value)
                )
    assert rows["0"]["fields"] is None
