"""Env keys in other scripts get romanized column names a BI tool can show, through a real
export on every database; keys that already have a column keep it.

Before romanization, a Hangul-only key such as 학습률 became env____ and a second one got a hash
suffix: names that mean nothing in Metabase or Superset."""

from __future__ import annotations

import pytest
from conftest import fetch_rows, write_pairs


def _export(run_cli, sim, db_url, tmp_path, pairs):
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
    )
    assert result.exit_code == 0, result.output
    return result


def _mapping(db_url, table="nsml_env_columns", key="env_key"):
    sql = f"SELECT {key}, column_name FROM {table}"  # noqa: S608 - the test's own names
    return {r[key]: r["column_name"] for r in fetch_rows(db_url, sql)}


def _row(db_url, run_name):
    (row,) = fetch_rows(db_url, "SELECT * FROM nsml_runs WHERE run_name = :r", {"r": run_name})
    return row


def test_keys_in_other_scripts_land_in_romanized_columns(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=0, runs_per_project=0)
    envs = {
        "학습률": "0.001",
        "배치 크기": "64",
        "lr_학습률": "mixed",
        "hagseublyul": "latin",
        "\ue000": "no spelling",
        "\ue001": "no spelling either",
        "北京": "beijing",
        "Скорость": "cyrillic",
        "エポック数": "kana",
        "🚀": "emoji only",
    }
    sim.put_run("p", "1", {"projectId": "p", "runName": "1", "envs": envs, "메모": "field"})
    _export(run_cli, sim, db_url, tmp_path, [("p", "1")])

    mapping = _mapping(db_url)
    assert set(mapping) == set(envs)
    assert mapping["배치 크기"] == "env_baechi_keugi"
    assert mapping["lr_학습률"] == "env_lr_hagseublyul"
    assert mapping["北京"] == "env_beijing"
    assert mapping["Скорость"] == "env_skorost_"  # anyascii spells the soft sign as '
    assert mapping["エポック数"] == "env_epotkushu"
    assert mapping["🚀"] == "env__rocket_"  # the emoji's name, as :rocket:
    # The Latin key that romanizes alike is already in normal form: it keeps the plain name.
    assert mapping["hagseublyul"] == "env_hagseublyul"
    assert mapping["학습률"].startswith("env_hagseublyul_")
    # Keys with nothing to romanize fall back to underscores, still one column each.
    assert mapping["\ue000"] == "env__" and mapping["\ue001"].startswith("env___")
    assert len(set(mapping.values())) == len(envs)
    row = _row(db_url, "1")
    assert {key: row[column] for key, column in mapping.items()} == envs
    # An undocumented top-level field is named by the same rule.
    assert _mapping(db_url, "nsml_field_columns", "field") == {"메모": "memo"}
    assert row["memo"] == "field"


def test_a_key_that_has_a_column_keeps_it_after_the_upgrade(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    sim = make_simulator(projects=0, runs_per_project=0)
    sim.put_run("p", "1", {"projectId": "p", "runName": "1", "envs": {"학습률": "0.1"}})
    # The table as earlier versions made it: every non-ASCII character became '_'.
    with monkeypatch.context() as before:
        before.setattr("nsml_etl.columnnames.romanize", lambda key: key)
        _export(run_cli, sim, db_url, tmp_path, [("p", "1")])
    assert _mapping(db_url) == {"학습률": "env____"}

    sim.put_run("p", "1", {"projectId": "p", "runName": "1", "envs": {"학습률": "0.2"}})
    sim.put_run(
        "p", "2", {"projectId": "p", "runName": "2", "envs": {"학습률": "0.3", "배치 크기": "32"}}
    )
    _export(run_cli, sim, db_url, tmp_path, [("p", "1"), ("p", "2")])
    assert _mapping(db_url) == {"학습률": "env____", "배치 크기": "env_baechi_keugi"}
    assert _row(db_url, "1")["env____"] == "0.2"
    row = _row(db_url, "2")
    assert (row["env____"], row["env_baechi_keugi"]) == ("0.3", "32")
    assert "env_hagseublyul" not in row  # no second column for the key
