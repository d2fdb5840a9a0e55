"""Runs deleted upstream: the export that gets a 404 for a stored run marks it gone."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import drop_views, fetch_rows, write_pairs


def export(run_cli, sim, pairs_file, db_url, expect=0):
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
    )
    assert result.exit_code == expect, result.output
    return result


def gone(db_url):
    return {
        (r["run_name"], r["gone_at"] is not None)
        for r in fetch_rows(db_url, "SELECT run_name, gone_at FROM nsml_runs")
    }


def test_a_404_marks_a_stored_run_gone_until_it_answers_again(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=3)
    pairs_file = write_pairs(tmp_path / "pairs.csv", [*sim.pairs(), (sim.pairs()[0][0], "99")])
    project = sim.pairs()[0][0]
    export(run_cli, sim, pairs_file, db_url, expect=1)  # run 99 never existed: not stored
    assert gone(db_url) == {("1", False), ("2", False), ("3", False)}
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # the table as nsml-etl made it before gone_at: it is added
        drop_views(conn)  # (as were its views: they read gone_at)
        conn.exec_driver_sql("ALTER TABLE nsml_runs DROP COLUMN gone_at")
    engine.dispose()

    body = sim.run(project, "2")
    sim.delete_run(project, "2")
    result = export(run_cli, sim, pairs_file, db_url, expect=1)
    assert "Not Found" in result.output  # still a failed pair, as before
    assert gone(db_url) == {("1", False), ("2", True), ("3", False)}
    failures = fetch_rows(
        db_url, "SELECT run_name, http_status FROM nsml_export_failures ORDER BY batch_id, run_name"
    )
    assert [(f["run_name"], f["http_status"]) for f in failures] == [
        ("99", 404),
        ("2", 404),
        ("99", 404),
    ]
    (first,) = fetch_rows(db_url, "SELECT gone_at FROM nsml_runs WHERE run_name = '2'")

    export(run_cli, sim, pairs_file, db_url, expect=1)  # gone again: the first time stays
    assert fetch_rows(db_url, "SELECT gone_at FROM nsml_runs WHERE run_name = '2'") == [first]

    sim.put_run(project, "2", body)  # it answers again: no longer gone
    export(run_cli, sim, pairs_file, db_url, expect=1)
    assert gone(db_url) == {("1", False), ("2", False), ("3", False)}
    # being gone is no change of the run's content: no history version for it
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_run_history") == [{"n": 3}]


def test_export_all_asks_after_unfinished_runs_the_list_no_longer_shows(
    run_cli, credentials, make_simulator, sqlite_url
):
    sim = make_simulator(projects=1, runs_per_project=3)
    project = sim.pairs()[0][0]
    for name, status in (
        ("1", "RUN_STATE_IN_PROGRESS"),
        ("2", "RUN_STATE_COMPLETED"),
        ("3", "RUN_STATE_PENDING"),
    ):
        sim.put_run(project, name, {**sim.data[project]["runs"][name], "status": status})

    def export_all(expect):
        result = run_cli("export", "--all", "--db", sqlite_url, "--base-url", sim.base_url)
        assert result.exit_code == expect, result.output
        return result

    export_all(0)
    sim.delete_run(project, "1")  # unfinished: deleted upstream, it drops out of the list
    sim.delete_run(project, "2")  # finished: its record is complete, nothing to ask
    result = export_all(1)
    assert f"{project}\t1\t" in result.output and f"{project}\t2\t" not in result.output
    assert gone(sqlite_url) == {("1", True), ("2", False), ("3", False)}
    export_all(0)  # marked gone: not asked again every night
    assert sum(n for p, n in sim.stats.by_path.items() if p.endswith("/runs/1")) == 2
