"""Crashes, hostile responses and hostile files: nothing lost, nothing leaked."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ACCESS_KEY, SECRET_KEY, fetch_rows, write_pairs

API_KEY = "APIKEYsecret-93b1"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nsml_etl.cli", *args]


def _env(**extra: str) -> dict:
    return {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY, **extra}


def test_sigkill_mid_export_then_rerun_lands_every_run_once(make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=2, runs_per_project=100, latency=0.03)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    args = _cli(
        "export",
        "--pairs",
        str(pairs_file),
        "--db",
        db_url,
        "--base-url",
        sim.base_url,
        "--concurrency",
        "4",
        "--chunk-size",
        "10",
    )
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until at least two chunks are committed
        time.sleep(0.1)
        try:
            if fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] >= 20:
                break
        except Exception:  # the table may not exist yet
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    committed = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"]
    assert 20 <= committed < 200
    assert fetch_rows(db_url, "SELECT status FROM nsml_export_batches") == [{"status": "running"}]

    rerun = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = fetch_rows(db_url, "SELECT project_id, run_name, status FROM nsml_runs")
    assert sorted((r["project_id"], r["run_name"]) for r in rows) == sorted(sim.pairs())
    for row in rows:
        assert row["status"] == sim.run(row["project_id"], row["run_name"])["status"]
    statuses = fetch_rows(db_url, "SELECT status FROM nsml_export_batches ORDER BY id")
    assert statuses == [{"status": "running"}, {"status": "succeeded"}]
    if db_url.startswith("sqlite"):
        assert fetch_rows(db_url, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]


def test_wrong_shapes_are_stored_faithfully_or_rejected_per_pair(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=3)
    project = next(iter(sim.data))
    big = "x" * (10 * 1024 * 1024)
    bodies = {
        "list": [{"runName": "list"}],
        "text": "just a string",
        "gpu-text": {"runName": "gpu-text", "gpuSvrCode": "205"},
        "gpu-bad": {"runName": "gpu-bad", "gpuSvrCode": "two hundred"},
        "envs-list": {"envs": ["LR=1"]},
        "envs-values": {"envs": {"N": 3, "F": 0.5, "B": True, "O": {"a": [1]}, "Z": None}},
        "other-run": {"runName": "999", "projectId": project},
        "other-project": {"projectId": "someone-else"},
        "ten-mb": {"runName": "ten-mb", "command": big, "envs": {"BIG": big[:100_000]}},
    }
    for name, body in bodies.items():
        sim.put_run(project, name, body)
    pairs = sim.pairs()
    pairs_file = write_pairs(tmp_path / "pairs.csv", pairs)
    result = run_cli(
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url
    )
    assert result.exit_code == 1
    for name, reason in [
        ("list", "response is a list"),
        ("text", "response is a string"),
        ("gpu-bad", 'gpuSvrCode is "two hundred"'),
        ("envs-list", "envs is a list"),
        ("other-run", "response is for runName '999', not the requested 'other-run'"),
        ("other-project", "response is for projectId 'someone-else'"),
    ]:
        assert f"{project}\t{name}\tunusable response: {reason}" in result.stdout
    assert "failed 6," in result.stdout
    rows = {r["run_name"]: r for r in fetch_rows(db_url, "SELECT * FROM nsml_runs")}
    assert set(rows) == {"1", "2", "3", "gpu-text", "envs-values", "ten-mb"}
    assert rows["gpu-text"]["gpu_svr_code"] == 205
    values = rows["envs-values"]
    assert (
        values["env_n"],
        values["env_f"],
        values["env_b"],
        values["env_o"],
        values["env_z"],
    ) == ("3", "0.5", "true", '{"a": [1]}', None)
    assert json.loads(values["envs"]) == bodies["envs-values"]["envs"]
    assert rows["ten-mb"]["command"] == big


def test_fault_matrix_never_leaks_a_secret(make_simulator, tmp_path):
    password = "dbPASSWORDsecret-5e"
    db_path = tmp_path / "runs.db"
    url = f"sqlite:///{db_path}"  # SQLite ignores a password; the URL still carries it
    url_with_password = f"sqlite:///{db_path}?password={password}"
    sim = make_simulator(
        projects=2,
        runs_per_project=10,
        fault_rate=0.5,
        fault_streak=2,
        retry_after=0,
        slow_seconds=0.6,
        api_key=API_KEY,
    )
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs() + [("missing", "1")])
    raw = tmp_path / "raw.jsonl.gz"
    outputs = []
    for extra in (["--verbose"], ["--log-format", "json", "--verbose"]):
        proc = subprocess.run(
            _cli(
                "export",
                "--pairs",
                str(pairs_file),
                "--base-url",
                sim.base_url,
                "--timeout",
                "0.3",
                "--backoff-initial",
                "0.01",
                "--save-raw",
                str(raw),
                *extra,
            ),
            env=_env(NCP_APIGW_API_KEY=API_KEY, NSML_ETL_DB_URL=url_with_password),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        outputs += [proc.stdout, proc.stderr]
    # a database failure's message and the wrong-key path too
    bad_db = subprocess.run(
        _cli(
            "export",
            "--pairs",
            str(pairs_file),
            "--base-url",
            sim.base_url,
            "--db",
            f"postgresql://u:{password}@127.0.0.1:1/x",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_db.returncode == 4
    outputs += [bad_db.stdout, bad_db.stderr]
    with gzip.open(raw, "rt", encoding="utf-8") as handle:
        outputs.append(handle.read())
    for table in ("nsml_runs", "nsml_export_batches", "nsml_export_failures"):
        outputs.append(str(fetch_rows(url, f"SELECT * FROM {table}")))  # noqa: S608
    everything = "\n".join(outputs)
    assert "GET /nsml/v1/projects/" in everything  # the verbose logs were captured
    for secret in (SECRET_KEY, API_KEY, password):
        assert secret not in everything


def test_a_gigabyte_pairs_file_is_streamed_and_refused_at_its_line(make_simulator, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=1)
    path = tmp_path / "huge.csv"
    with open(path, "wb") as handle:
        handle.write(b"project_id,run_name\n" + b"p,1\n" * 1000)
        handle.truncate(1024**3)  # a sparse gigabyte of NUL bytes after the valid lines
    peak_rss = Path(__file__).parent.parent / "scripts" / "peak_rss.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(peak_rss),
            "-m",
            "nsml_etl.cli",
            "export",
            "--pairs",
            str(path),
            "--base-url",
            sim.base_url,
            "--db",
            f"sqlite:///{tmp_path}/runs.db",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{path}:1002: NUL byte" in proc.stderr
    peak_kib = int(proc.stderr.rsplit("peak_rss_kib=", 1)[1])
    assert peak_kib < 200 * 1024  # the file was never held in memory
    assert sim.stats.requests == 0 and not (tmp_path / "runs.db").exists()
