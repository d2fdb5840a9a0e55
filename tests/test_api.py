"""The Python API (nsml_etl.export, nsml_etl.load) called directly, as an Airflow task or a
notebook would: reports, exceptions, interrupts, and the README's example."""

from __future__ import annotations

import _thread
import json
import re
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    fetch_rows,
    readme_python,
    table_names,
    write_pairs,
)

import nsml_etl
from nsml_etl.config import SETTINGS

RUNS_QUERY = "SELECT project_id, run_name, status FROM nsml_runs ORDER BY project_id, run_name"


def _stored(db_url: str) -> set[tuple[str, str]]:
    return {(r["project_id"], r["run_name"]) for r in fetch_rows(db_url, RUNS_QUERY)}


def test_export_a_list_of_pairs_returns_the_report(credentials, simulator, db_url):
    pairs = simulator.pairs()
    report = nsml_etl.export(pairs=pairs, db_url=db_url, base_url=simulator.base_url, concurrency=4)
    assert report.ok and report.exit_code == 0
    assert (report.requested, report.exported, report.failed) == (len(pairs), len(pairs), [])
    assert report.mode == "pairs" and report.settings.concurrency == 4
    assert _stored(db_url) == set(pairs)
    (batch,) = fetch_rows(
        db_url, "SELECT id, status, requested, exported, options FROM nsml_export_batches"
    )
    assert (batch["id"], batch["status"], batch["requested"], batch["exported"]) == (
        report.batch_id,
        "succeeded",
        len(pairs),
        len(pairs),
    )
    options = json.loads(batch["options"])
    assert (options["mode"], options["pairs"], options["pairs_file"]) == ("pairs", len(pairs), None)


def test_a_partial_failure_is_the_report_not_an_exception(
    credentials, simulator, sqlite_url, tmp_path
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", [*simulator.pairs()[:3], ("gone", "7")])
    report = nsml_etl.export(pairs_file, db_url=sqlite_url, base_url=simulator.base_url)
    assert not report.ok and report.exit_code == 1
    assert report.exported == 3
    (failure,) = report.failed
    assert (failure.project_id, failure.run_name, failure.status) == ("gone", "7", 404)
    assert "Not Found" in failure.reason
    report.write_failures(tmp_path / "failed.csv")
    assert (tmp_path / "failed.csv").read_text().splitlines()[1].startswith("gone,7,")


def test_bad_pairs_lines_raise_one_error_listing_them(credentials, simulator, sqlite_url, tmp_path):
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("project_id,run_name\np,\np,1\n,2\n")
    with pytest.raises(nsml_etl.BadLinesError) as caught:
        nsml_etl.export(pairs_file, db_url=sqlite_url, base_url=simulator.base_url)
    assert isinstance(caught.value, nsml_etl.InputError)
    assert caught.value.lines == [
        f"{pairs_file}:2: run_name is empty",
        f"{pairs_file}:4: project_id is empty",
    ]
    assert caught.value.more == 0 and simulator.stats.requests == 0


def test_a_wrong_secret_raises_and_writes_nothing(simulator, sqlite_url, monkeypatch):
    monkeypatch.delenv("NCP_ACCESS_KEY", raising=False)  # the explicit credentials are used
    wrong = nsml_etl.Credentials(access_key=ACCESS_KEY, secret_key="wrong")
    with pytest.raises(nsml_etl.AuthenticationError) as caught:
        nsml_etl.export(
            simulator.pairs(), db_url=sqlite_url, base_url=simulator.base_url, credentials=wrong
        )
    assert isinstance(caught.value, nsml_etl.EtlError)
    assert caught.value.report.exported == 0 and caught.value.report.batch_id is None
    assert "nsml_runs" not in table_names(sqlite_url)
    assert "wrong" not in repr(wrong) and "api_key=None" in repr(wrong)
    assert "api_key='***'" in repr(nsml_etl.Credentials(ACCESS_KEY, SECRET_KEY, "key"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pairs": [("p", "1"), ("p", "")]}, "pairs[1]: run_name is empty"),
        ({"pairs": [("p", "1", "x")]}, "pairs[0]: expected a (project_id, run_name) pair"),
        ({"pairs": [{"projectId": "p"}]}, "pairs[0]: missing column run_name or runName"),
        ({"pairs": []}, "pairs: no pairs given"),
        ({"pairs": [("p", "1")], "all_runs": True}, "exactly one of them"),
        ({}, "exactly one of them"),
        ({"all_runs": True, "concurrency": 0}, "concurrency: must be at least 1 (got 0)"),
        ({"all_runs": True, "table": "Bad-Name"}, "table: must be 1-63 characters"),
        ({"projects": ["p", ""]}, "projects[1]: expected a project id"),
        (
            {"all_runs": True, "credentials": nsml_etl.Credentials("AK", " ")},
            "credentials.secret_key is empty",
        ),
        (
            {"all_runs": True, "settings": nsml_etl.Settings(concurrency=0)},
            "concurrency: must be at least 1",
        ),
        (
            {"all_runs": True, "settings": nsml_etl.Settings(), "table": "t"},
            "settings= replaces every setting argument; do not give table",
        ),
    ],
)
def test_bad_input_raises_input_error_before_anything(credentials, sqlite_url, kwargs, message):
    with pytest.raises(nsml_etl.InputError, match=re.escape(message)):
        where = {"db_url": sqlite_url, "base_url": "http://127.0.0.1:9/nsml/v1"}
        nsml_etl.export(**({} if "settings" in kwargs else where), **kwargs)
    assert table_names(sqlite_url) == set()


def test_bad_pairs_file_names_file_and_line(credentials, sqlite_url, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("project_id,run_name\np,1\np\n")
    with pytest.raises(nsml_etl.InputError, match=re.escape(f"{path}:3: missing value")):
        nsml_etl.export(path, db_url=sqlite_url)


def test_missing_keys_and_unreachable_database_raise(monkeypatch, tmp_path):
    monkeypatch.delenv("NCP_SECRET_KEY", raising=False)
    monkeypatch.setenv("NCP_ACCESS_KEY", ACCESS_KEY)
    with pytest.raises(nsml_etl.InputError, match="NCP_SECRET_KEY is not set"):
        nsml_etl.export(all_runs=True)
    monkeypatch.setenv("NCP_SECRET_KEY", SECRET_KEY)
    with pytest.raises(nsml_etl.DatabaseError):
        nsml_etl.export(all_runs=True, db_url="postgresql+psycopg://u@127.0.0.1:9/x")


def test_arguments_beat_env_which_beats_the_config_file(
    credentials, simulator, sqlite_url, tmp_path, monkeypatch
):
    config = tmp_path / "etl.toml"
    config.write_text('concurrency = 3\ntable = "from_file"\nmax_attempts = 2\n')
    monkeypatch.setenv("NSML_ETL_TABLE", "from_env")
    monkeypatch.setenv("NSML_ETL_MAX_ATTEMPTS", "4")
    report = nsml_etl.export(
        simulator.pairs()[:1],
        config_file=config,
        table="from_arg",
        db_url=sqlite_url,
        base_url=simulator.base_url,
        dry_run=True,
    )
    settings = report.settings
    assert (settings.table, settings.max_attempts, settings.concurrency) == ("from_arg", 4, 3)
    assert report.dry_run and report.preview == [tuple(simulator.pairs()[0])]
    assert simulator.stats.requests == 0 and table_names(sqlite_url) == set()


def test_every_setting_is_a_keyword_argument_and_no_other_name_is(
    credentials, sqlite_url, tmp_path, monkeypatch
):
    # export and load take the settings as keyword arguments checked against Settings' fields
    # (there is no second list of them to fall out of step): each one given lands in the
    # report's settings, and a name that is no setting of the function is an InputError.
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    ca_bundle = tmp_path / "ca.pem"
    ca_bundle.write_text("")
    given = {
        "db_url": sqlite_url,
        "table": "given_table",
        "base_url": "http://127.0.0.1:9/nsml/v1",
        "concurrency": 3,
        "timeout": 7.5,
        "max_attempts": 2,
        "chunk_size": 11,
        "max_env_columns": 5,
        "backoff_initial": 0.25,
        "backoff_max": 2.0,
        "retry_after_max": 9.0,
        "rate_limit": "5/s",
        "list_timezone": "UTC",
        "ca_bundle": str(ca_bundle),
        "metrics_file": str(tmp_path / "metrics.prom"),
        "nodes": True,
    }
    assert set(given) == {s.name for s in SETTINGS}
    report = nsml_etl.export([("p", "1")], dry_run=True, **given)
    for setting in SETTINGS:
        default = setting.default
        value = getattr(report.settings, setting.name)
        assert value == setting.parse(given[setting.name]) != default, setting.name
    with pytest.raises(nsml_etl.InputError, match=re.escape("export() takes no argument tabel=")):
        nsml_etl.export([("p", "1")], dry_run=True, tabel="t")
    with pytest.raises(nsml_etl.InputError, match=re.escape("load() takes no argument concurre")):
        nsml_etl.load(tmp_path / "raw.jsonl", db_url=sqlite_url, concurrency=3)
    assert table_names(sqlite_url) == set()


def test_load_replays_an_archive_and_reports_bad_lines(
    credentials, simulator, sqlite_url, db_url, tmp_path
):
    raw = tmp_path / "raw.jsonl.gz"
    exported = nsml_etl.export(
        all_runs=True, db_url=sqlite_url, base_url=simulator.base_url, save_raw=raw
    )
    assert exported.mode == "all" and exported.requested == exported.exported == len(
        simulator.pairs()
    )
    report = nsml_etl.load(raw, db_url=db_url)
    assert report.ok and report.exported == exported.exported
    assert report.mode == "load" and report.settings.chunk_size == 4000
    assert _stored(db_url) == set(simulator.pairs())

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"projectId": "p", "runName": "1"}\n{broken\n')
    partial = nsml_etl.load(bad, db_url=db_url, chunk_size=1)
    assert (partial.exported, [f.reason[: len(str(bad)) + 2] for f in partial.failed]) == (
        1,
        [f"{bad}:2"],
    )
    with pytest.raises(nsml_etl.InputError, match="no such file"):
        nsml_etl.load(tmp_path / "nope.jsonl", db_url=db_url)


def test_a_stop_event_ends_the_export_and_commits_what_was_fetched(
    credentials, make_simulator, sqlite_url
):
    sim = make_simulator(projects=1, runs_per_project=300, latency=0.01)
    stop = threading.Event()
    seen = []

    def progress(report: nsml_etl.ExportReport) -> None:
        seen.append(report.fetched)
        if report.fetched >= 20:
            stop.set()

    report = nsml_etl.export(
        sim.pairs(),
        db_url=sqlite_url,
        base_url=sim.base_url,
        concurrency=4,
        chunk_size=7,
        progress=progress,
        stop=stop,
    )
    assert report.interrupted and not report.ok and seen[0] == 0
    assert 20 <= report.exported == len(_stored(sqlite_url)) < 300
    (batch,) = fetch_rows(sqlite_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch == {"status": "interrupted", "exported": report.exported}


def test_ctrl_c_raises_keyboard_interrupt_only_after_committing(
    credentials, make_simulator, sqlite_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=300, latency=0.02, slow_seconds=120)
    raw = tmp_path / "raw.jsonl"

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def press_ctrl_c_twice() -> None:
        wait_for(lambda: sim.stats.requests >= 30)
        sim.set_faults(1.0, ("slow",))  # requests hang from now on
        wait_for(lambda: sim.stats.faults.total() >= 4)  # every worker waits on one
        _thread.interrupt_main()  # as Ctrl-C in a notebook: KeyboardInterrupt, main thread
        time.sleep(0.3)  # well within the 2 s the hung requests get after the first
        _thread.interrupt_main()  # a second one cuts them at once

    presser = threading.Thread(target=press_ctrl_c_twice)
    presser.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        nsml_etl.export(
            sim.pairs(),
            db_url=sqlite_url,
            base_url=sim.base_url,
            concurrency=4,
            chunk_size=5,
            save_raw=raw,
        )
    elapsed = time.monotonic() - started
    presser.join()
    assert elapsed < 30  # not the 120 s a hung request takes
    fetched = {
        (r["projectId"], r["runName"]) for r in map(json.loads, raw.read_text().splitlines())
    }
    assert len(fetched) >= 20 and _stored(sqlite_url) == fetched
    (batch,) = fetch_rows(sqlite_url, "SELECT status, exported FROM nsml_export_batches")
    assert batch == {"status": "interrupted", "exported": len(fetched)}


def test_the_package_imports_cheaply_and_load_stays_the_function(
    credentials, simulator, sqlite_url
):
    code = (
        "import sys, nsml_etl; heavy = {'pandas', 'sqlalchemy', 'requests'} & "
        "set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    nsml_etl.export(simulator.pairs()[:1], db_url=sqlite_url, base_url=simulator.base_url)
    assert callable(nsml_etl.load) and nsml_etl.load.__module__ == "nsml_etl.api"
    assert "nsml_etl.load" not in sys.modules  # no module of that name could hide the function


def test_the_readme_example_runs_against_the_simulator(
    credentials, simulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # it writes nsml_runs.db, raw.jsonl.gz and replayed.db here
    monkeypatch.setenv("NSML_BASE_URL", simulator.base_url)
    exec(compile(readme_python("## Python API"), "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines()[-1] == str(len(simulator.pairs()))
    assert _stored(f"sqlite:///{tmp_path / 'replayed.db'}") == set(simulator.pairs())


def test_the_readme_airflow_task_runs_as_a_task_would(
    credentials, simulator, sqlite_url, monkeypatch, caplog
):
    # Airflow would run it in a worker with these in the environment.
    monkeypatch.setenv("NSML_BASE_URL", simulator.base_url)
    namespace: dict = {"__name__": "dags.nsml_runs"}
    exec(compile(readme_python("### An Airflow task"), "README.md", "exec"), namespace)
    caplog.set_level("INFO")
    result = namespace["export_nsml_runs"](db_url=sqlite_url)
    assert result["exported"] == len(simulator.pairs()) and result["batch_id"] == 1
    assert "exported 24, failed 0" in caplog.text  # through logging, as Airflow shows it
    again = namespace["export_nsml_runs"](db_url=sqlite_url)  # finished runs are skipped
    assert again["exported"] + again["skipped"] == len(simulator.pairs())

    first = simulator.pairs()[0]
    simulator.put_run(*first, body={**simulator.run(*first), "gpuSvrCode": "x"})  # unusable
    monkeypatch.setenv("NSML_ETL_TABLE", "second")  # a fresh table: nothing is skipped
    with pytest.raises(RuntimeError, match=r"1 of 24 runs failed: \w+/1: unusable response"):
        namespace["export_nsml_runs"](db_url=sqlite_url)
    assert len(fetch_rows(sqlite_url, "SELECT run_name FROM second")) == 23  # the rest landed


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda **kw: nsml_etl.export([("p", "1")], progress=5, **kw),
            "progress= takes a callable",
        ),
        (
            lambda **kw: nsml_etl.export([("p", "1")], stop=True, **kw),
            "stop= takes a threading.Event",
        ),
        (lambda **kw: nsml_etl.export([("p", "1")], cancel="x", **kw), "cancel= takes a threading"),
        (lambda **kw: nsml_etl.export([("p", "1")], save_raw=5, **kw), "save_raw= takes a path"),
        (lambda **kw: nsml_etl.export(all_runs="yes", **kw), "all_runs= takes True or False"),
        (lambda **kw: nsml_etl.export([("p", "1")], dry_run=1, **kw), "dry_run= takes True or"),
        (lambda **kw: nsml_etl.export([("p", "1")], config_file=3, **kw), "config_file= takes a"),
        (lambda **kw: nsml_etl.load(5, **kw), 'file= takes a path, or "-" for stdin, got int 5'),
        (lambda **kw: nsml_etl.load(None, **kw), "file= takes a path"),
        (lambda **kw: nsml_etl.load("x.jsonl", progress=[], **kw), "progress= takes a callable"),
        (lambda **kw: nsml_etl.load("x.jsonl", stop=1, **kw), "stop= takes a threading.Event"),
    ],
)
def test_a_wrong_argument_type_is_an_input_error_before_anything_is_written(
    credentials, simulator, tmp_path, monkeypatch, call, message
):
    monkeypatch.setenv("NSML_BASE_URL", simulator.base_url)
    # Regression: these escaped as TypeError or AttributeError, some after the database was
    # opened (export(stop=True) made the database file, then failed on stop.is_set()).
    database = tmp_path / "runs.db"
    with pytest.raises(nsml_etl.InputError, match=re.escape(message)):
        call(db_url=f"sqlite:///{database}")
    assert not database.exists()
    assert simulator.stats.requests == 0
