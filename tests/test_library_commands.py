"""The library functions behind pairs, views, report and gpu-servers, called through the Python
API (nsml_etl.write_run_list, create_views, build_report, set_gpu_server, unset_gpu_servers,
load_gpu_servers, list_gpu_servers): what they return, and the rows that land."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import pytest
import sqlalchemy as sa
from conftest import fetch_rows, readme_python

import nsml_etl
from nsml_etl.tablenames import view_bases


def _servers(db_url: str) -> list[tuple]:
    return [
        (r["gpu_svr_code"], r["gpus"], r["label"])
        for r in fetch_rows(db_url, "SELECT * FROM nsml_gpu_servers ORDER BY gpu_svr_code")
    ]


def _view_names(db_url: str) -> set[str]:
    engine = sa.create_engine(db_url)
    try:
        return set(sa.inspect(engine).get_view_names())
    finally:
        engine.dispose()


def test_gpu_server_functions_write_and_read_the_counts(db_url, tmp_path):
    nsml_etl.set_gpu_server(205, 1, db_url=db_url)
    nsml_etl.set_gpu_server(207, 2, "A100 x2", db_url=db_url)
    nsml_etl.set_gpu_server(205, 8, db_url=db_url)  # replaces the count
    assert _servers(db_url) == [(205, 8, None), (207, 2, "A100 x2")]
    toml = tmp_path / "gpus.toml"
    toml.write_text('[servers]\n101 = 0\n205 = { gpus = 1, label = "V100" }\n')
    assert nsml_etl.load_gpu_servers(toml, db_url=db_url) == 2
    assert _servers(db_url) == [(101, 0, None), (205, 1, "V100"), (207, 2, "A100 x2")]
    assert nsml_etl.unset_gpu_servers([101, 999], db_url=db_url) == 1

    runs = tmp_path / "runs.jsonl"
    runs.write_text(
        "".join(
            json.dumps({"projectId": "p", "runName": str(n), "gpuSvrCode": code}) + "\n"
            for n, code in enumerate([205, 300, 300])
        )
    )
    assert nsml_etl.load(runs, db_url=db_url).exported == 3
    listed = nsml_etl.list_gpu_servers(db_url=db_url)
    assert [(s.gpu_svr_code, s.gpus, s.label) for s in listed.known] == [
        (205, 1, "V100"),
        (207, 2, "A100 x2"),
    ]
    assert [(code, runs) for code, _, runs in listed.missing] == [(300, 2)]
    assert listed.as_text().splitlines()[:3] == [
        "gpu_svr_code\tgpus\tlabel",
        "205\t1\tV100",
        "207\t2\tA100 x2",
    ]


def test_gpu_server_functions_check_before_the_database(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(nsml_etl.DatabaseError, match="the file does not exist"):
        nsml_etl.list_gpu_servers(db_url=f"sqlite:///{missing}")
    with pytest.raises(nsml_etl.InputError, match="expected 0 to 4096"):
        nsml_etl.set_gpu_server(205, 5000, db_url=f"sqlite:///{missing}")
    with pytest.raises(
        nsml_etl.InputError, match=re.escape("set_gpu_server() takes no argument table=")
    ):
        nsml_etl.set_gpu_server(205, 1, db_url=f"sqlite:///{missing}", table="t")
    assert not missing.exists()  # a reading or refused call never creates the file


def test_create_views_and_build_report_read_what_export_wrote(credentials, simulator, db_url):
    pairs = simulator.pairs()
    assert nsml_etl.export(pairs, db_url=db_url, base_url=simulator.base_url).ok
    created = nsml_etl.create_views(db_url=db_url)
    assert len(created) == len(view_bases()) and all(view.question for view in created)
    assert {view.name for view in created} <= _view_names(db_url)

    read = nsml_etl.build_report(db_url=db_url, sections=["runs_by_project"], limit=0)
    (table,) = read.shown
    assert table.name == "runs_by_project" and len(read.tables) > 1
    by_project = {row[1]: row[2] for row in table.rows}
    assert by_project == dict(Counter(project for project, _ in pairs))
    assert read.source.startswith("table nsml_runs in ")
    assert json.loads(read.as_json())["runs_by_project"]["total_rows"] == len(by_project)
    rows = list(csv.reader(read.as_csv().splitlines()))
    assert rows[0][:3] == ["project_name", "project_id", "runs"] and len(rows) == 1 + len(
        by_project
    )


def test_views_and_report_refuse_a_database_without_the_table(db_url):
    with pytest.raises(nsml_etl.DatabaseError, match="no nsml-etl tables"):
        nsml_etl.create_views(db_url=db_url)
    with pytest.raises(nsml_etl.DatabaseError, match="no nsml-etl tables"):
        nsml_etl.build_report(db_url=db_url)
    with pytest.raises(nsml_etl.InputError, match="no section 'runs_by_projekt'"):
        nsml_etl.build_report(db_url=db_url, sections=["runs_by_projekt"])


def test_write_run_list_writes_a_pairs_file_export_reads(credentials, simulator, tmp_path):
    out = tmp_path / "pairs.csv"
    count = nsml_etl.write_run_list(out, base_url=simulator.base_url)
    assert count == len(simulator.pairs())
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(
        map(tuple, simulator.pairs())
    )
    assert all(r["status"] and r["create_time"] for r in rows)
    project = simulator.pairs()[0][0]
    one = tmp_path / "one.csv"
    expected = sum(1 for p, _ in simulator.pairs() if p == project)
    assert nsml_etl.write_run_list(one, projects=project, base_url=simulator.base_url) == expected
    report = nsml_etl.export(one, dry_run=True, db_url=f"sqlite:///{tmp_path / 'runs.db'}")
    assert report.requested == expected


def test_the_readme_example_of_the_other_functions_runs(
    credentials, simulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the example reads and writes sqlite:///nsml_runs.db here
    nsml_etl.export(simulator.pairs(), db_url="sqlite:///nsml_runs.db", base_url=simulator.base_url)
    code = readme_python("### The other commands as functions")
    exec(compile(code, "README.md", "exec"), {"nsml_etl": nsml_etl})
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line]
    projects = {project for project, _ in simulator.pairs()}
    assert lines[0] == "== Runs by project (runs_by_project)"
    assert lines[1].split()[:3] == ["project_name", "project_id", "runs"]
    assert len(lines) == 2 + len(projects)
    assert _servers("sqlite:///nsml_runs.db") == [(205, 8, "A100 x8")]
