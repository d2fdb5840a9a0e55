"""Run names, project ids and env keys are compared byte for byte on every database.

MariaDB's utf8mb4_bin pads trailing spaces: 'r1' and 'r1 ' were one row there (the second load
overwrote the first run and its history lost its current version; both in one chunk failed
the chunk), and env keys 'A' and 'A ' failed the schema change with a duplicate key."""

from __future__ import annotations

import json
import unicodedata

import pytest
import sqlalchemy as sa
from conftest import _server_database, fetch_rows, write_pairs

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
# Run names that differ only by a trailing space, by case, or by Unicode normal form.
TWINS = ["r1", "r1 ", "R1", NFC, NFD]


def load(run_cli, db_url, path, bodies):
    path.write_text(
        "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies), encoding="utf-8"
    )
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 0, result.output


def current_versions(db_url):
    rows = fetch_rows(
        db_url, "SELECT run_name, status FROM nsml_run_history WHERE valid_to IS NULL"
    )
    return sorted((r["run_name"], r["status"]) for r in rows)


def test_names_and_env_keys_differing_by_space_case_or_form_stay_distinct(
    run_cli, db_url, tmp_path
):
    # All in one chunk: on MariaDB this used to fail the chunk with a duplicate key.
    load(
        run_cli,
        db_url,
        tmp_path / "one.jsonl",
        [
            {
                "projectId": "p",
                "runName": name,
                "status": f"S{i}",
                "envs": {"A": f"a{i}", "A ": f"space{i}"},
            }
            for i, name in enumerate(TWINS)
        ],
    )
    rows = fetch_rows(db_url, "SELECT * FROM nsml_runs")
    mapping = {
        r["env_key"]: r["column_name"]
        for r in fetch_rows(db_url, "SELECT env_key, column_name FROM nsml_env_columns")
    }
    assert mapping == {"A": "env_a", "A ": "env_a_"}
    assert sorted((r["run_name"], r["status"], r["env_a"], r["env_a_"]) for r in rows) == sorted(
        (name, f"S{i}", f"a{i}", f"space{i}") for i, name in enumerate(TWINS)
    )
    assert current_versions(db_url) == sorted((name, f"S{i}") for i, name in enumerate(TWINS))
    # The env key catalog view keeps the two keys apart too.
    result = run_cli("views", "--db", db_url)
    assert result.exit_code == 0, result.output
    catalog = {
        r["env_key"]: r["runs"] for r in fetch_rows(db_url, "SELECT * FROM nsml_env_key_catalog")
    }
    assert catalog == {"A": len(TWINS), "A ": len(TWINS)}

    # One chunk per twin: each changes its own row and its own history only.
    for i, name in enumerate(TWINS):
        load(
            run_cli,
            db_url,
            tmp_path / f"next{i}.jsonl",
            [{"projectId": "p", "runName": name, "status": f"T{i}"}],
        )
    assert current_versions(db_url) == sorted((name, f"T{i}") for i, name in enumerate(TWINS))
    closed = fetch_rows(
        db_url, "SELECT run_name, content FROM nsml_run_history WHERE valid_to IS NOT NULL"
    )
    assert sorted((r["run_name"], json.loads(r["content"])["status"]) for r in closed) == sorted(
        (name, f"S{i}") for i, name in enumerate(TWINS)
    )


def test_export_of_twin_pairs_lands_distinct_rows(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=0, runs_per_project=0)
    for i, name in enumerate(TWINS):
        sim.put_run("p", name, {"projectId": "p", "runName": name, "note": f"n{i}"})
    sim.put_run("p ", "r1", {"projectId": "p ", "runName": "r1", "note": "project twin"})
    pairs = [("p", name) for name in TWINS] + [("p ", "r1")]
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
    )
    assert result.exit_code == 0, result.output
    rows = fetch_rows(db_url, "SELECT project_id, run_name, note FROM nsml_runs")
    assert sorted((r["project_id"], r["run_name"], r["note"]) for r in rows) == sorted(
        [("p", name, f"n{i}") for i, name in enumerate(TWINS)] + [("p ", "r1", "project twin")]
    )


# Tables exactly as nsml-etl made them on MariaDB before run names were compared exactly
# (SHOW CREATE TABLE after one load of run r1 with env key A), with that load's rows.
LEGACY_MARIADB = [
    """CREATE TABLE `nsml_runs` (
  `project_id` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `run_name` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `project_name` mediumtext DEFAULT NULL,
  `status` mediumtext DEFAULT NULL,
  `creator` mediumtext DEFAULT NULL,
  `eng_full_name` mediumtext DEFAULT NULL,
  `gpu_svr_code` bigint(20) DEFAULT NULL,
  `image_type` mediumtext DEFAULT NULL,
  `image_path` mediumtext DEFAULT NULL,
  `command` mediumtext DEFAULT NULL,
  `note` mediumtext DEFAULT NULL,
  `envs` mediumtext DEFAULT NULL,
  `fetched_at` datetime(6) DEFAULT NULL,
  `create_time` datetime(6) DEFAULT NULL,
  `update_time` datetime(6) DEFAULT NULL,
  `env_a` mediumtext DEFAULT NULL,
  PRIMARY KEY (`project_id`,`run_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `nsml_env_columns` (
  `table_name` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `env_key` varchar(700) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `column_name` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (`table_name`,`env_key`),
  UNIQUE KEY `table_name` (`table_name`,`column_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `nsml_field_columns` (
  `table_name` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `field` varchar(700) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `column_name` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (`table_name`,`field`),
  UNIQUE KEY `table_name` (`table_name`,`column_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `nsml_export_batches` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `table_name` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `command` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `started_at` datetime(6) NOT NULL,
  `finished_at` datetime(6) DEFAULT NULL,
  `status` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `requested` bigint(20) DEFAULT NULL,
  `exported` bigint(20) DEFAULT NULL,
  `failed` bigint(20) DEFAULT NULL,
  `retried` bigint(20) DEFAULT NULL,
  `options` mediumtext DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `nsml_export_failures` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `batch_id` bigint(20) NOT NULL,
  `project_id` mediumtext DEFAULT NULL,
  `run_name` mediumtext DEFAULT NULL,
  `http_status` int(11) DEFAULT NULL,
  `error_code` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `message` mediumtext DEFAULT NULL,
  `attempts` int(11) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `ix_nsml_export_failures_batch_id` (`batch_id`),
  CONSTRAINT `nsml_export_failures_ibfk_1` FOREIGN KEY (`batch_id`)
    REFERENCES `nsml_export_batches` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `nsml_run_history` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `table_name` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `project_id` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `run_name` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `valid_from` datetime(6) NOT NULL,
  `valid_to` datetime(6) DEFAULT NULL,
  `batch_id` bigint(20) DEFAULT NULL,
  `status` mediumtext DEFAULT NULL,
  `content` mediumtext DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `ix_nsml_run_history_run` (`table_name`,`project_id`,`run_name`,`valid_to`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    "INSERT INTO nsml_runs (project_id, run_name, status, envs, fetched_at, env_a) "
    "VALUES ('p', 'r1', 'RUN_STATE_RUNNING', '{\"A\":\"1\"}', '2026-01-01 00:00:00', '1')",
    "INSERT INTO nsml_env_columns VALUES ('nsml_runs', 'A', 'env_a')",
    "INSERT INTO nsml_export_batches (table_name, command, started_at, finished_at, status, "
    "requested, exported, failed, retried) VALUES ('nsml_runs', 'load', '2026-01-01 00:00:00', "
    "'2026-01-01 00:00:01', 'succeeded', 1, 1, 0, 0)",
    "INSERT INTO nsml_run_history (table_name, project_id, run_name, valid_from, batch_id, "
    "status) VALUES ('nsml_runs', 'p', 'r1', '2026-01-01 00:00:00', 1, 'RUN_STATE_RUNNING')",
]
# Every column compared as a key, and the collation each must end up with.
KEY_COLUMNS = {
    ("nsml_runs", "project_id"),
    ("nsml_runs", "run_name"),
    ("nsml_env_columns", "table_name"),
    ("nsml_env_columns", "env_key"),
    ("nsml_env_columns", "column_name"),
    ("nsml_field_columns", "table_name"),
    ("nsml_field_columns", "field"),
    ("nsml_field_columns", "column_name"),
    ("nsml_run_history", "table_name"),
    ("nsml_run_history", "project_id"),
    ("nsml_run_history", "run_name"),
    ("nsml_export_failures", "project_id"),
    ("nsml_export_failures", "run_name"),
    ("nsml_export_batches", "table_name"),
}


@pytest.fixture
def mariadb_url():
    yield from _server_database("mysql")


def test_tables_from_before_are_migrated_in_place_on_mariadb(run_cli, mariadb_url, tmp_path):
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as conn:
        for statement in LEGACY_MARIADB:
            conn.exec_driver_sql(statement)
    engine.dispose()

    load(
        run_cli,
        mariadb_url,
        tmp_path / "space.jsonl",
        [
            {"projectId": "p", "runName": "r1 ", "status": "RUN_STATE_FAILED", "envs": {"A ": "2"}},
            {"projectId": "p", "runName": "r2", "status": "RUN_STATE_RUNNING"},
            {"projectId": "p", "runName": "r2 ", "status": "RUN_STATE_FAILED"},
        ],
    )

    collations = {
        (r["TABLE_NAME"], r["COLUMN_NAME"]): r["COLLATION_NAME"]
        for r in fetch_rows(
            mariadb_url,
            "SELECT TABLE_NAME, COLUMN_NAME, COLLATION_NAME FROM "
            "information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()",
        )
    }
    assert {key: collations[key] for key in KEY_COLUMNS} == dict.fromkeys(
        KEY_COLUMNS, "utf8mb4_nopad_bin"
    )
    assert collations[("nsml_runs", "status")] == "utf8mb4_general_ci"  # not a key: unchanged
    rows = fetch_rows(mariadb_url, "SELECT run_name, status, env_a, env_a_ FROM nsml_runs")
    assert sorted((r["run_name"], r["status"], r["env_a"], r["env_a_"]) for r in rows) == [
        ("r1", "RUN_STATE_RUNNING", "1", None),
        ("r1 ", "RUN_STATE_FAILED", None, "2"),
        ("r2", "RUN_STATE_RUNNING", None, None),
        ("r2 ", "RUN_STATE_FAILED", None, None),
    ]
    history = fetch_rows(
        mariadb_url, "SELECT id, run_name, status, valid_to FROM nsml_run_history ORDER BY id"
    )
    assert history[0] == {
        "id": 1,
        "run_name": "r1",
        "status": "RUN_STATE_RUNNING",
        "valid_to": None,
    }  # r1 keeps its current version
    assert sorted((h["run_name"], h["status"], h["valid_to"]) for h in history[1:]) == [
        ("r1 ", "RUN_STATE_FAILED", None),
        ("r2", "RUN_STATE_RUNNING", None),
        ("r2 ", "RUN_STATE_FAILED", None),
    ]
    assert fetch_rows(
        mariadb_url, "SELECT env_key, column_name FROM nsml_env_columns ORDER BY column_name"
    ) == [{"env_key": "A", "column_name": "env_a"}, {"env_key": "A ", "column_name": "env_a_"}]
