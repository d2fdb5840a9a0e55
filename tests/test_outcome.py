"""The batch row, the exit code, ExportReport.ok and the summary tell one story, whatever ends
an export or load: a run list that breaks off, a bug, a progress callback that raises, an
archive on a full disk, a torn archive, a closed stderr."""

from __future__ import annotations

import csv
import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from conftest import ACCESS_KEY, SECRET_KEY, drop_views, fetch_rows, table_names, write_pairs

import nsml_etl
from nsml_etl import pipeline
from nsml_etl.errors import OutputError
from nsml_etl.outcome import ExportReport, FailedPair
from nsml_etl.pairs import Pair
from nsml_etl.testing.simulator import PREFIX

BATCHES = "SELECT status, exported, error FROM nsml_export_batches ORDER BY id"

# Every outcome the suite produces, with the batch status and exit code it must give: the
# status is a function of the exit code (1 is a partial export or a run list that broke off;
# 4, 70 and 74 are errors that stopped it).
EXPECTED = {
    "success": ("succeeded", 0),
    "partial": ("partial", 1),
    "auth_failed": ("auth_failed", 3),
    "run_list_broke_off": ("run_list_failed", 1),
    "sigterm": ("interrupted", 143),
    "database_failed": ("failed", 4),
    "bug": ("failed", 70),
    "archive_failed": ("failed", 74),
    "quota_spent": ("quota_exhausted", 1),
}
STATUSES_OF_EXIT = {0: {"succeeded"}, 1: {"partial", "run_list_failed", "quota_exhausted"}}
STATUSES_OF_EXIT[3] = {"auth_failed"}
STATUSES_OF_EXIT.update({143: {"interrupted"}, 4: {"failed"}, 70: {"failed"}, 74: {"failed"}})


def _stored(db_url: str) -> set[tuple[str, str]]:
    rows = fetch_rows(db_url, "SELECT project_id, run_name FROM nsml_runs")
    return {(r["project_id"], r["run_name"]) for r in rows}


def _export(run_cli, sim, db_url, tmp_path, pairs, *args: str):
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    return run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url, *args
    )


def break_run_list_after(sim, pages: int) -> None:
    """From page ``pages + 1`` on, the run list answers 500 (the API went away mid-list);
    Get run still answers."""
    pick = sim.pick_fault

    def pick_fault(path: str) -> str | None:
        parts = urlsplit(path)
        page = int(parse_qs(parts.query).get("page", ["1"])[0])
        if parts.path == f"{PREFIX}/projects/runs" and page > pages:
            return "500"
        return pick(path)

    sim.pick_fault = pick_fault


def change_the_key_after(sim, answers: int) -> None:
    """The gateway stops taking our key after ``answers`` Get-run answers (a key rotated)."""
    route, count = sim.route, [0]

    def changing(raw_path: str):
        count[0] += 1
        if count[0] == answers:
            sim.config.secret_key = "rotated"
        return route(raw_path)

    sim.route = changing


def crash_on_run(monkeypatch, run_name: str) -> None:
    """A bug: fetching ``run_name`` raises what nsml-etl never expects."""
    fetch = pipeline._Fetcher.fetch

    def fetch_or_crash(self, item):
        if item.pair.run_name == run_name:
            raise RuntimeError("injected bug\nwith a second line")
        return fetch(self, item)

    monkeypatch.setattr(pipeline._Fetcher, "fetch", fetch_or_crash)


class _FullDisk:
    """A file on a disk with ``room`` bytes left: writes past it fail with ENOSPC, as on a
    full file system, after writing what fits."""

    def __init__(self, path: Path, room: int) -> None:
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.room = room

    def write(self, data: bytes) -> int:
        fits = data[: self.room]
        self.handle.write(fits)
        self.room -= len(fits)
        if len(fits) < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)

    def close(self) -> None:
        self.handle.close()


def fill_the_disk(monkeypatch, room: int) -> None:
    monkeypatch.setattr("nsml_etl.archive.open_output", lambda path, what: _FullDisk(path, room))


# -- the run list breaks off ----------------------------------------------------------------


def test_a_run_list_that_breaks_off_is_not_a_success(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    # Regression: exit 1 but recorded 'succeeded', so nsml_export_freshness showed the export
    # as the last successful one while the API was down; the summary line said nothing.
    sim = make_simulator(projects=1, runs_per_project=25, max_page_size=10)
    break_run_list_after(sim, pages=1)
    args = ("--all", "--db", db_url, "--base-url", sim.base_url, "--max-attempts", "1")
    result = run_cli("export", *args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: run list page 2: HTTP 500")
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("Summary: exported 10, failed 0,")
    assert "; the run list failed, so the runs it did not list were not exported (" in summary
    assert len(_stored(db_url)) == 10
    (batch,) = fetch_rows(db_url, BATCHES)
    assert batch["status"] == "run_list_failed" and batch["exported"] == 10
    assert batch["error"].startswith("run list page 2: HTTP 500")

    assert run_cli("views", "--db", db_url).exit_code == 0
    (fresh,) = fetch_rows(db_url, "SELECT * FROM nsml_export_freshness")
    assert fresh["last_successful_export"] is None
    assert (fresh["partial_exports"], fresh["unsuccessful_exports"]) == (0, 1)

    report = nsml_etl.export(all_runs=True, db_url=db_url, base_url=sim.base_url, max_attempts=1)
    assert not report.ok and report.exit_code == 1
    assert report.outcome.status == "run_list_failed"
    assert "the run list failed" in report.summary()
    assert [b["status"] for b in fetch_rows(db_url, BATCHES)] == ["run_list_failed"] * 2


def test_the_json_batch_finished_event_carries_the_status(
    run_cli, credentials, make_simulator, sqlite_url
):
    sim = make_simulator(projects=1, runs_per_project=25, max_page_size=10)
    break_run_list_after(sim, pages=2)
    result = run_cli(
        "export", "--all", "--db", sqlite_url, "--base-url", sim.base_url, "--max-attempts", "1",
        "--log-format", "json",
    )  # fmt: skip
    assert result.exit_code == 1 and result.stdout == ""
    events = [json.loads(line) for line in result.stderr.splitlines()]
    (finished,) = [e for e in events if e["event"] == "batch_finished"]
    assert (finished["status"], finished["exported"]) == ("run_list_failed", 20)
    assert "the run list failed" in finished["message"]


# -- a bug, a progress callback that raises ---------------------------------------------------


def test_a_bug_commits_the_runs_fetched_and_closes_the_batch_failed(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch
):
    # Regression: exit 70 with nothing committed (the default chunk was still in hand), and no
    # batch row, or with small chunks a batch row 'running' forever.
    sim = make_simulator(projects=1, runs_per_project=6)
    pairs = sim.pairs()
    crash_on_run(monkeypatch, "4")
    result = _export(run_cli, sim, db_url, tmp_path, pairs, "--concurrency", "1")
    assert result.exit_code == 70
    assert result.stderr.startswith("Error: unexpected RuntimeError: injected bug; this is a bug")
    assert "Traceback" not in result.output and "second line" not in result.output
    assert _stored(db_url) == set(pairs[:3])
    (batch,) = fetch_rows(db_url, BATCHES)
    assert batch == {"status": "failed", "exported": 3, "error": "RuntimeError: injected bug"}

    with pytest.raises(RuntimeError, match="injected bug"):
        nsml_etl.export(
            pairs=pairs, db_url=db_url, base_url=sim.base_url, concurrency=1, chunk_size=1
        )
    assert [(b["status"], b["exported"]) for b in fetch_rows(db_url, BATCHES)] == [
        ("failed", 3),
        ("failed", 3),
    ]


def test_a_progress_callback_that_raises_closes_the_batch_and_is_raised(
    credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=8)
    calls = []

    def progress(report):
        calls.append(report.fetched)
        if report.fetched >= 3:
            raise ValueError("the dashboard is down")

    with pytest.raises(ValueError, match="the dashboard is down"):
        nsml_etl.export(
            pairs=sim.pairs(), db_url=db_url, base_url=sim.base_url, concurrency=1,
            progress=progress,
        )  # fmt: skip
    (batch,) = fetch_rows(db_url, BATCHES)
    assert batch["status"] == "failed"
    assert batch["error"] == "ValueError: the dashboard is down"
    assert batch["exported"] == len(_stored(db_url)) >= 3  # the runs in hand were committed

    path = tmp_path / "runs.jsonl"
    path.write_text(
        "".join(json.dumps({"projectId": "p", "runName": str(i)}) + "\n" for i in range(9))
    )
    with pytest.raises(ValueError, match="the dashboard is down"):
        nsml_etl.load(path, db_url=db_url, chunk_size=3, progress=progress)
    load_batch = fetch_rows(db_url, BATCHES)[-1]
    assert load_batch["status"] == "failed" and load_batch["exported"] == 3


# -- the archive cannot be written -----------------------------------------------------------


def test_an_archive_on_a_full_disk_ends_the_export_cleanly(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch
):
    # Regression: exit 70, the runs fetched not committed, the batch 'running'.
    sim = make_simulator(projects=1, runs_per_project=40)
    pairs = sim.pairs()
    raw = tmp_path / "raw.jsonl"
    fill_the_disk(monkeypatch, room=6000)
    result = _export(run_cli, sim, db_url, tmp_path, pairs, "--save-raw", str(raw))
    assert result.exit_code == 74, result.output
    message = f"--save-raw {raw}: cannot write: No space left on device (ENOSPC)"
    assert result.stderr.startswith(f"Error: {message}")
    assert "Traceback" not in result.output
    (batch,) = fetch_rows(db_url, BATCHES)
    assert batch["status"] == "failed" and batch["error"].startswith(message)
    stored = _stored(db_url)
    assert batch["exported"] == len(stored) > 0
    archived = [json.loads(line) for line in raw.read_bytes().splitlines(keepends=True)
                if line.endswith(b"\n")]  # fmt: skip
    assert {(r["projectId"], r["runName"]) for r in archived} <= stored

    with pytest.raises(OutputError, match="No space left on device"):
        nsml_etl.export(pairs=pairs, db_url=db_url, base_url=sim.base_url, save_raw=raw)
    assert [b["status"] for b in fetch_rows(db_url, BATCHES)] == ["failed", "failed"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_save_raw_to_dev_full_is_exit_74_and_the_runs_land(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path
):
    # Regression: exit 70 ('unexpected OSError'), nothing committed, the batch 'running'.
    sim = make_simulator(projects=1, runs_per_project=5)
    result = _export(run_cli, sim, sqlite_url, tmp_path, sim.pairs(), "--save-raw", "/dev/full")
    assert result.exit_code == 74, result.output
    assert result.stderr.startswith("Error: --save-raw /dev/full: cannot write: No space left")
    (batch,) = fetch_rows(sqlite_url, BATCHES)
    assert batch["status"] == "failed" and batch["exported"] == len(_stored(sqlite_url)) > 0
    assert Path("/dev/full").is_char_device()


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return mounted.returncode == 0


@pytest.mark.parametrize(("name", "size"), [("raw.jsonl", "64k"), ("raw.jsonl.gz", "8k")])
def test_a_real_full_disk_then_load_replays_every_complete_line(
    run_cli, credentials, make_simulator, sqlite_url, tmp_path, name, size
):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, size):
        pytest.skip("mounting a tmpfs needs root; test_an_archive_on_a_full_disk covers it")
    try:
        sim = make_simulator(projects=1, runs_per_project=600 if name.endswith(".gz") else 120)
        raw = disk / name
        result = _export(run_cli, sim, sqlite_url, tmp_path, sim.pairs(), "--save-raw", str(raw))
        assert result.exit_code == 74, result.output
        assert "No space left on device (ENOSPC)" in result.stderr
        (batch,) = fetch_rows(sqlite_url, BATCHES)
        assert batch["status"] == "failed" and batch["exported"] == len(_stored(sqlite_url))

        replayed = f"sqlite:///{tmp_path / 'replayed.db'}"
        loaded = run_cli("load", str(raw), "--db", replayed)
        assert loaded.exit_code in (0, 1), loaded.output
        assert "Traceback" not in loaded.output
        assert 0 < len(_stored(replayed)) <= batch["exported"]
        assert _stored(replayed) <= _stored(sqlite_url)
        if loaded.exit_code == 1:  # the last line was cut mid-way: it alone failed
            assert "the file ends in the middle of this line" in loaded.stdout
            (load_batch,) = fetch_rows(replayed, BATCHES)
            assert load_batch["status"] == "partial"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# -- an archive whose last line is torn -----------------------------------------------------


def _archive_lines(count: int) -> bytes:
    lines = [
        {"projectId": "p", "runName": str(i), "fetchedAt": "2026-01-01T00:00:00",
         "response": {"projectId": "p", "runName": str(i), "note": f"run {i} " * 20}}
        for i in range(1, count + 1)
    ]  # fmt: skip
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.mark.parametrize("compressed", [False, True])
def test_load_of_an_archive_torn_mid_string_loads_the_rest(run_cli, db_url, tmp_path, compressed):
    # Regression: a gzip archive cut short stopped the load with exit 2 ("Compressed file
    # ended before the end-of-stream marker"), loading none of its complete lines.
    data = _archive_lines(300)
    path = tmp_path / ("raw.jsonl.gz" if compressed else "raw.jsonl")
    if compressed:
        whole = gzip.compress(data)
        torn = whole[: len(whole) * 3 // 4]
        complete = zlib_prefix(torn)
    else:
        torn = data[: data.index(b'"note": "run 200') + 20]  # cut inside a string
        complete = torn
    path.write_bytes(torn)
    whole_lines = complete.count(b"\n")
    assert 100 < whole_lines < 300
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[:2] == [
        "Failed pairs (1):",
        f"  {path}:{whole_lines + 1}: " + result.stdout.splitlines()[1].split(": ", 1)[1],
    ]
    assert "the file ends in the middle of this line" in result.stdout
    assert _stored(db_url) == {("p", str(i)) for i in range(1, whole_lines + 1)}
    (batch,) = fetch_rows(db_url, BATCHES)
    assert (batch["status"], batch["exported"]) == ("partial", whole_lines)

    report = nsml_etl.load(path, db_url=db_url)
    assert (report.exported, len(report.failed), report.exit_code) == (whole_lines, 1, 1)
    assert report.failed[0].reason.startswith(f"{path}:{whole_lines + 1}: not valid JSON")


def zlib_prefix(torn: bytes) -> bytes:
    """What a gzip stream cut short decompresses to, up to its cut."""
    import zlib

    return zlib.decompressobj(31).decompress(torn)


# -- a closed stderr -------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("stderr", ["closed", "reader gone"])
def test_a_closed_stderr_never_stops_an_export(
    make_simulator, sqlite_url, tmp_path, log_format, stderr
):
    # Regression: exit 70 with nothing exported (sys.stderr is None under 2>&-).
    sim = make_simulator(projects=1, runs_per_project=30)
    pairs_file = write_pairs(tmp_path / "pairs.csv", [*sim.pairs(), ("gone", "1")])
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    args = [
        "export", "--pairs", str(pairs_file), "--db", sqlite_url, "--base-url", sim.base_url,
        "--log-format", log_format, "-v", "--chunk-size", "5",
    ]  # fmt: skip
    command = [sys.executable, "-m", "nsml_etl.cli", *args]
    if stderr == "closed":
        proc = subprocess.Popen(
            ["sh", "-c", 'exec "$@" 2>&-', "sh", *command], env=env, stdout=subprocess.PIPE
        )
    else:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        proc.stderr.close()  # the reader went away before the first line
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert _stored(sqlite_url) == set(sim.pairs())
    (batch,) = fetch_rows(sqlite_url, BATCHES)
    assert (batch["status"], batch["exported"]) == ("partial", 30)
    if log_format == "text":
        assert out.decode().splitlines()[-1].startswith("Summary: exported 30, failed 1,")


# -- every outcome: the batch status matches the exit code ----------------------------------


def _sigterm(sim, db_url, tmp_path) -> int:
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    args = ["--db", db_url, "--base-url", sim.base_url, "--chunk-size", "1", "--concurrency", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsml_etl.cli", "export", "--pairs", str(pairs_file), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while "nsml_export_batches" not in table_names(db_url) or not fetch_rows(db_url, BATCHES):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def _database_fails(run_cli, sim, db_url, tmp_path) -> int:
    pairs = sim.pairs()
    assert _export(run_cli, sim, db_url, tmp_path, pairs[:2]).exit_code == 0
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # a history table a DBA broke
        drop_views(conn)  # the first export made them; SQLite would refuse the rename
        if conn.dialect.name == "duckdb":  # DuckDB alters no table an index depends on
            conn.exec_driver_sql("DROP INDEX ix_nsml_run_history_run")
        conn.exec_driver_sql("ALTER TABLE nsml_run_history RENAME COLUMN status TO scratch_s")
    engine.dispose()
    return _export(run_cli, sim, db_url, tmp_path, pairs[2:]).exit_code


@pytest.mark.parametrize("case", list(EXPECTED))
def test_the_batch_status_always_matches_the_exit_code(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch, case
):
    sim = make_simulator(projects=1, runs_per_project=8, max_page_size=3)
    pairs = sim.pairs()
    small = ("--concurrency", "1", "--chunk-size", "1")
    if case == "success":
        code = _export(run_cli, sim, db_url, tmp_path, pairs).exit_code
    elif case == "partial":
        code = _export(run_cli, sim, db_url, tmp_path, [*pairs, ("gone", "1")]).exit_code
    elif case == "auth_failed":
        change_the_key_after(sim, answers=3)
        code = _export(run_cli, sim, db_url, tmp_path, pairs, *small).exit_code
    elif case == "run_list_broke_off":
        break_run_list_after(sim, pages=1)
        args = ("--db", db_url, "--base-url", sim.base_url, "--max-attempts", "1")
        code = run_cli("export", "--all", *args).exit_code
    elif case == "sigterm":
        sim = make_simulator(projects=1, runs_per_project=300, latency=0.05)
        code = _sigterm(sim, db_url, tmp_path)
    elif case == "database_failed":
        code = _database_fails(run_cli, sim, db_url, tmp_path)
    elif case == "bug":
        crash_on_run(monkeypatch, "5")
        code = _export(run_cli, sim, db_url, tmp_path, pairs, *small).exit_code
    elif case == "quota_spent":
        sim = make_simulator(projects=1, runs_per_project=8, quota=4)
        code = _export(run_cli, sim, db_url, tmp_path, sim.pairs(), *small).exit_code
    else:
        fill_the_disk(monkeypatch, room=3000)
        raw = str(tmp_path / "raw.jsonl")
        code = _export(run_cli, sim, db_url, tmp_path, pairs, *small, "--save-raw", raw).exit_code
    status = fetch_rows(db_url, BATCHES)[-1]["status"]
    assert status in STATUSES_OF_EXIT[code], (status, code)
    assert (status, code) == EXPECTED[case]


def test_failure_lines_say_a_shared_reason_once():
    # Regression: an unreachable API listed the same reason under every one of its runs.
    report = ExportReport(requested=4)
    for run in ("1", "2", "3"):
        report.failed.append(FailedPair(Pair("p", run), "transport error: x (h:1)", attempts=5))
    report.failed.append(FailedPair(Pair("p", "4"), "HTTP 404: not found", status=404))
    report.failed.append(FailedPair(None, "raw.jsonl:7: not JSON"))
    assert report.failure_lines() == [
        "Failed pairs (5):",
        "  3 pairs: transport error: x (h:1)",
        "    p\t1\t[5 attempts]",
        "    p\t2\t[5 attempts]",
        "    p\t3\t[5 attempts]",
        "  p\t4\tHTTP 404: not found [1 attempt]",
        "  raw.jsonl:7: not JSON",
    ]
    assert ExportReport().failure_lines() == []


def test_a_signal_after_a_spent_quota_keeps_the_quota_in_the_record():
    # Regression: a quota confirmed, then SIGINT while the export wound down: the batch said
    # 'interrupted' with no error, and the summary dropped the quota and what it left undone.
    report = ExportReport(requested=10, fetched=4, exported=4, interrupted=True, not_attempted=6)
    report.quota_error = nsml_etl.QuotaExhausted("HTTP 429 errorCode 400: Quota Exceeded")
    outcome = report.outcome
    assert (outcome.status, outcome.exit_code) == ("interrupted", 130)
    assert outcome.error == "HTTP 429 errorCode 400: Quota Exceeded; 6 runs not attempted"
    assert report.summary().endswith(
        "; interrupted; API quota exhausted: 6 runs not attempted; the next export after the "
        "quota resets continues (with --skip-finished)"
    )
    report.interrupted = False
    assert (report.outcome.status, report.outcome.exit_code) == ("quota_exhausted", 1)
    assert ExportReport(interrupted=True).outcome.error is None


def test_a_bug_still_writes_failures_out_and_the_api_error_carries_the_report(
    run_cli, credentials, make_simulator, db_url, tmp_path, monkeypatch
):
    # Regression: an export that stopped on a bug (exit 70) left --failures-out unwritten (a
    # stale file from an earlier run stayed), since only the library's own errors carried the
    # report that lists the failed pairs.
    sim = make_simulator(projects=1, runs_per_project=8)
    pairs = [*sim.pairs(), ("gone", "1")]
    failures_out = tmp_path / "failed.csv"
    failures_out.write_text("project_id,run_name\nstale,1\n")
    crash_on_run(monkeypatch, "5")
    small = ("--concurrency", "1", "--chunk-size", "1", "--failures-out", str(failures_out))
    result = _export(run_cli, sim, db_url, tmp_path, [("gone", "1"), *sim.pairs()], *small)
    assert result.exit_code == 70, result.output
    recorded = fetch_rows(db_url, "SELECT project_id, run_name FROM nsml_export_failures")
    assert [(r["project_id"], r["run_name"]) for r in recorded] == [("gone", "1")]
    with open(failures_out, encoding="utf-8", newline="") as handle:
        written = [(row["project_id"], row["run_name"]) for row in csv.DictReader(handle)]
    assert written == [("gone", "1")]
    with pytest.raises(RuntimeError, match="injected bug") as caught:
        nsml_etl.export(pairs, db_url=db_url, base_url=sim.base_url, concurrency=1, chunk_size=1)
    report = caught.value.report
    assert isinstance(report, nsml_etl.ExportReport) and report.outcome.status == "failed"
    assert report.metrics["exit_code"] == 70
