"""End to end: the real CLI against the simulator over loopback HTTP, into real databases."""

from __future__ import annotations

import json

import pytest
from conftest import SECRET_KEY, fetch_rows, table_names, write_pairs

DOCUMENTED = {
    "project_id": "projectId",
    "run_name": "runName",
    "project_name": "projectName",
    "status": "status",
    "creator": "creator",
    "eng_full_name": "engFullName",
    "gpu_svr_code": "gpuSvrCode",
    "image_type": "imageType",
    "image_path": "imagePath",
    "command": "command",
    "note": "note",
}


def export(run_cli, sim, pairs_file, db_url, *extra):
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
        *extra,
    )


def assert_table_matches(db_url, sim, pairs):
    """Every requested run is one row holding exactly what the API sent."""
    rows = fetch_rows(db_url, "SELECT * FROM nsml_runs")
    assert len(rows) == len(pairs)
    mapping = {
        r["env_key"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    }
    assert len(set(mapping.values())) == len(mapping)
    by_key = {(r["project_id"], r["run_name"]): r for r in rows}
    for project_id, run_name in pairs:
        body = sim.run(project_id, run_name)
        row = by_key[(project_id, run_name)]
        for column, field in DOCUMENTED.items():
            assert row[column] == body.get(field), (column, row[column], body.get(field))
        envs = body.get("envs")
        assert (json.loads(row["envs"]) if row["envs"] is not None else None) == envs
        for key, column in mapping.items():
            assert row[column] == (envs or {}).get(key), (key, column)
        assert row["run_type"] == body["runType"]
        assert row["fetched_at"] is not None
    return rows


def test_export_lands_every_run_exactly(run_cli, credentials, simulator, db_url, tmp_path):
    pairs = simulator.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs + pairs[:3])  # duplicates too
    result = export(run_cli, simulator, pairs_file, db_url)
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith(f"Summary: exported {len(pairs)}, failed 0, retried 0, elapsed")
    )
    assert_table_matches(db_url, simulator, pairs)
    assert simulator.stats.requests == len(pairs)  # duplicates fetched once


def test_rerun_updates_in_place_and_evolves_the_schema(
    run_cli, credentials, simulator, db_url, tmp_path
):
    pairs = simulator.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    assert export(run_cli, simulator, pairs_file, db_url).exit_code == 0
    first_mapping = fetch_rows(db_url, "SELECT * FROM nsml_env_columns ORDER BY env_key")

    project_id, run_name = pairs[0]
    changed = simulator.run(project_id, run_name)
    changed.update(
        status="RUN_STATE_FAILED",
        note="재시도 필요",
        envs={"BRAND_NEW.key": "새 값", "lr": "0.5"},
        extraThing=7,
    )
    simulator.put_run(project_id, run_name, changed)
    result = export(run_cli, simulator, pairs_file, db_url)
    assert result.exit_code == 0, result.output

    rows = assert_table_matches(db_url, simulator, pairs)
    row = next(r for r in rows if (r["project_id"], r["run_name"]) == (project_id, run_name))
    assert row["status"] == "RUN_STATE_FAILED" and row["env_brand_new_key"] == "새 값"
    assert row["extra_thing"] == "7"
    # keys the run no longer has are NULL in its row; their columns stay for other runs
    mapping = fetch_rows(db_url, "SELECT * FROM nsml_env_columns ORDER BY env_key")
    for entry in first_mapping:
        assert entry in mapping  # never renamed or dropped
        if entry["env_key"] != "lr":
            assert row[entry["column_name"]] is None


def test_bad_credentials_exit_3_and_write_nothing(
    run_cli, credentials, simulator, db_url, tmp_path, monkeypatch
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    monkeypatch.setenv("NCP_SECRET_KEY", "not-the-secret")
    result = export(run_cli, simulator, pairs_file, db_url, "--concurrency", "2")
    assert result.exit_code == 3
    assert "authentication failed" in result.stderr and "errorCode 200" in result.stderr
    assert table_names(db_url) == set()  # no runs table, no bookkeeping either
    # stopped at once: at most the requests already in flight, not one per pair
    assert simulator.stats.requests <= 2 < len(simulator.pairs())


def test_bad_credentials_leave_an_existing_table_untouched(
    run_cli, credentials, simulator, sqlite_url, tmp_path, monkeypatch
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    assert export(run_cli, simulator, pairs_file, sqlite_url).exit_code == 0
    before = fetch_rows(sqlite_url, "SELECT * FROM nsml_runs ORDER BY project_id, run_name")
    monkeypatch.setenv("NCP_ACCESS_KEY", "AKWRONG")
    assert export(run_cli, simulator, pairs_file, sqlite_url).exit_code == 3
    assert fetch_rows(sqlite_url, "SELECT * FROM nsml_runs ORDER BY project_id, run_name") == before


def test_not_found_pairs_fail_alone(run_cli, credentials, simulator, db_url, tmp_path):
    pairs = simulator.pairs()
    missing = [(pairs[0][0], "9999"), ("nosuchproject00000", "1")]
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs + missing)
    result = export(run_cli, simulator, pairs_file, db_url)
    assert result.exit_code == 1
    # Both 404s share their reason: said once, over the two pairs.
    assert "  2 pairs: HTTP 404 errorCode 300: Not Found" in result.stdout
    assert f"    {pairs[0][0]}\t9999\t[1 attempt]" in result.stdout
    assert "    nosuchproject00000\t1\t[1 attempt]" in result.stdout
    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith(f"Summary: exported {len(pairs)}, failed 2,")
    )
    assert_table_matches(db_url, simulator, pairs)


def test_faults_at_35_percent_of_every_kind_still_land_exact_rows(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(
        projects=2,
        runs_per_project=15,
        fault_rate=0.35,
        fault_streak=4,
        retry_after=0,
        slow_seconds=1.0,
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = export(
        run_cli,
        sim,
        pairs_file,
        db_url,
        "--timeout",
        "0.4",
        "--max-attempts",
        "5",
        "--chunk-size",
        "7",
    )
    assert result.exit_code == 0, result.output
    assert_table_matches(db_url, sim, sim.pairs())
    assert sim.stats.auth_failures == 0  # no retry was rejected as stale or replayed
    assert sum(sim.stats.faults.values()) > 0
    assert max(sim.stats.by_path.values()) <= 5
    retried = int(result.stdout.split("retried ")[1].split(",")[0])
    # Every retry the server saw was counted; on a loaded machine an attempt can also time out
    # before the server accepted it, a retry the server never saw.
    assert sim.stats.requests - len(sim.pairs()) <= retried <= 4 * len(sim.pairs())


def test_pairs_from_stdin(run_cli, credentials, simulator, sqlite_url):
    pairs = simulator.pairs()[:4]
    text = "".join(json.dumps({"projectId": p, "runName": r}) + "\n" for p, r in pairs)
    result = run_cli(
        "export", "--pairs", "-", "--db", sqlite_url, "--base-url", simulator.base_url, input=text
    )
    assert result.exit_code == 0, result.output
    assert len(fetch_rows(sqlite_url, "SELECT * FROM nsml_runs")) == 4


def test_api_key_is_sent_when_set(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path, monkeypatch
):
    sim = make_simulator(projects=1, runs_per_project=2, api_key="gw-key")
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    assert export(run_cli, sim, pairs_file, sqlite_url).exit_code == 3
    monkeypatch.setenv("NCP_APIGW_API_KEY", "gw-key")
    assert export(run_cli, sim, pairs_file, sqlite_url).exit_code == 0


@pytest.mark.parametrize("missing", ["NCP_ACCESS_KEY", "NCP_SECRET_KEY"])
def test_missing_credentials_exit_2_before_any_request(
    run_cli, credentials, simulator, sqlite_url, tmp_path, monkeypatch, missing
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    monkeypatch.delenv(missing)
    result = export(run_cli, simulator, pairs_file, sqlite_url)
    assert result.exit_code == 2
    assert missing in result.stderr
    assert simulator.stats.requests == 0
    assert not (tmp_path / "runs.db").exists()


def test_missing_credentials_are_named_all_at_once(
    run_cli, credentials, simulator, sqlite_url, tmp_path, monkeypatch
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    monkeypatch.delenv("NCP_ACCESS_KEY")
    monkeypatch.setenv("NCP_SECRET_KEY", "  ")  # blank counts as missing
    result = export(run_cli, simulator, pairs_file, sqlite_url)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: NCP_ACCESS_KEY and NCP_SECRET_KEY are not set: export the "
        "NCP access and secret keys in the environment (keys are never "
        "read from flags or files)\n"
    )
    assert simulator.stats.requests == 0


def test_bad_pairs_exit_2_before_any_request(run_cli, credentials, simulator, sqlite_url, tmp_path):
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("project_id,run_name\np,1\np,\n")
    result = export(run_cli, simulator, pairs_file, sqlite_url)
    assert result.exit_code == 2
    assert f"{pairs_file}:3: run_name is empty" in result.stderr
    assert simulator.stats.requests == 0
    assert not (tmp_path / "runs.db").exists()


def test_several_bad_pairs_lines_in_one_error_before_any_request(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("project_id,run_name\np,1\np,\n" + "p,..\n" * 21)
    result = export(run_cli, simulator, pairs_file, sqlite_url)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: {pairs_file}: 22 bad lines; fix them and run again:"
    assert lines[1] == f"  {pairs_file}:3: run_name is empty"
    assert lines[2] == f"  {pairs_file}:4: run_name '..' is a relative path segment, not a name"
    assert lines[20] == f"  {pairs_file}:22: run_name '..' is a relative path segment, not a name"
    assert lines[21:] == ["  ... and 2 more"]
    assert simulator.stats.requests == 0
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("nosuchdb://x/y", 4, "unsupported database 'nosuchdb'"),
        ("not a url", 2, "is not a database URL"),
        ("sqlite:////nonexistent-dir/x.db", 4, "directory /nonexistent-dir does not exist"),
        ("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", 4, "127.0.0.1:1"),
    ],
)
def test_bad_database_exit_before_any_request(
    run_cli, credentials, simulator, tmp_path, url, code, message
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    result = export(run_cli, simulator, pairs_file, url)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "hunter2" not in result.output
    assert simulator.stats.requests == 0


def test_secret_never_printed(run_cli, credentials, make_simulator, sqlite_url, tmp_path):
    sim = make_simulator(
        projects=1,
        runs_per_project=6,
        fault_rate=0.5,
        fault_streak=2,
        retry_after=0,
        slow_seconds=0.6,
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs() + [("p0000000000", "1")])
    result = export(run_cli, sim, pairs_file, sqlite_url, "--verbose", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "GET /nsml/v1/projects/" in result.stderr  # verbose logged the requests
    assert SECRET_KEY not in result.output
    dump = "\n".join(str(r) for r in fetch_rows(sqlite_url, "SELECT * FROM nsml_runs"))
    assert SECRET_KEY not in dump


def test_config_file_layering(run_cli, credentials, simulator, tmp_path, monkeypatch):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:2])
    config = tmp_path / "etl.toml"
    config.write_text(
        f'db_url = "sqlite:///{tmp_path}/from_file.db"\n'
        f'table = "from_file"\nbase_url = "{simulator.base_url}"\n'
    )
    assert run_cli("export", "--pairs", str(pairs_file), "--config", str(config)).exit_code == 0
    assert fetch_rows(f"sqlite:///{tmp_path}/from_file.db", "SELECT COUNT(*) AS n FROM from_file")
    monkeypatch.setenv("NSML_ETL_DB_URL", f"sqlite:///{tmp_path}/from_env.db")
    assert run_cli("export", "--pairs", str(pairs_file), "--config", str(config)).exit_code == 0
    assert (tmp_path / "from_env.db").exists()
    flag_db = f"sqlite:///{tmp_path}/from_flag.db"
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--config",
        str(config),
        "--db",
        flag_db,
        "--table",
        "flagged",
    )
    assert result.exit_code == 0
    assert fetch_rows(flag_db, "SELECT COUNT(*) AS n FROM flagged") == [{"n": 2}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('secret_key = "x"\n', "looks like a secret"),
        ("concurency = 3\n", "unknown key 'concurency'"),
        ('concurrency = "many"\n', "concurrency: must be a whole number"),
        ('db_url = "postgresql://u:pw@h/db"\n', "db_url holds a password"),
        ("not toml =\n", "not valid TOML"),
    ],
)
def test_bad_config_file_exit_2(run_cli, credentials, simulator, tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:1])
    result = run_cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--config",
        str(config),
        "--base-url",
        simulator.base_url,
    )
    assert result.exit_code == 2
    assert str(config) in result.stderr and message in result.stderr
    assert "pw@" not in result.stderr
    assert simulator.stats.requests == 0


@pytest.mark.parametrize("table", ["Runs", "runs;drop", "nsml_env_columns", "9lives"])
def test_bad_table_name_exit_2(run_cli, credentials, simulator, sqlite_url, tmp_path, table):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs()[:1])
    result = export(run_cli, simulator, pairs_file, sqlite_url, "--table", table)
    assert result.exit_code == 2 and "--table" in result.stderr
    assert simulator.stats.requests == 0


def test_failures_out_can_be_fed_back_as_pairs(
    run_cli, credentials, simulator, sqlite_url, tmp_path
):
    pairs = simulator.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs + [("gone", "1"), ("gone", "2")])
    failures = tmp_path / "failed.csv"
    result = export(run_cli, simulator, pairs_file, sqlite_url, "--failures-out", str(failures))
    assert result.exit_code == 1
    assert failures.read_text().splitlines()[0] == "project_id,run_name,reason"
    simulator.put_run("gone", "1", {"runName": "1", "projectId": "gone"})
    simulator.put_run("gone", "2", {"runName": "2", "projectId": "gone"})
    retry = export(run_cli, simulator, failures, sqlite_url, "--failures-out", str(failures))
    assert retry.exit_code == 0, retry.output
    assert "Summary: exported 2, failed 0" in retry.stdout
    assert len(fetch_rows(sqlite_url, "SELECT * FROM nsml_runs")) == len(pairs) + 2
