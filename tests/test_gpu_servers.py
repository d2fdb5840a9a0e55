"""nsml-etl gpu-servers: GPU counts per server, set by hand or from a TOML file, never guessed."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import fetch_rows, table_names


def servers(db_url):
    return [
        (r["gpu_svr_code"], r["gpus"], r["label"])
        for r in fetch_rows(db_url, "SELECT * FROM nsml_gpu_servers ORDER BY gpu_svr_code")
    ]


def test_set_unset_load_and_list(run_cli, sqlite_url, tmp_path):
    assert run_cli("gpu-servers", "set", "205", "1", "--db", sqlite_url).exit_code == 0
    result = run_cli("gpu-servers", "set", "207", "2", "--label", "A100 x2", "--db", sqlite_url)
    assert result.exit_code == 0 and "207: 2 GPUs" in result.stderr
    run_cli("gpu-servers", "set", "205", "8", "--db", sqlite_url)  # replaces the count
    assert servers(sqlite_url) == [(205, 8, None), (207, 2, "A100 x2")]
    toml = tmp_path / "gpus.toml"
    toml.write_text('[servers]\n101 = 0\n205 = { gpus = 1, label = "V100" }\n')
    assert run_cli("gpu-servers", "load", str(toml), "--db", sqlite_url).exit_code == 0
    assert servers(sqlite_url) == [(101, 0, None), (205, 1, "V100"), (207, 2, "A100 x2")]
    result = run_cli("gpu-servers", "unset", "101", "999", "--db", sqlite_url)
    assert result.exit_code == 0 and "Removed 1 of 2" in result.stderr

    runs = tmp_path / "runs.jsonl"
    runs.write_text(
        "".join(
            json.dumps(
                {"projectId": "p", "runName": str(n), "gpuSvrCode": code, "engFullName": name}
            )
            + "\n"
            for n, (code, name) in enumerate([(205, "V100"), (300, "H100"), (300, "H100")])
        )
    )
    assert run_cli("load", str(runs), "--db", sqlite_url).exit_code == 0
    listing = run_cli("gpu-servers", "list", "--db", sqlite_url).stdout
    assert listing.splitlines() == [
        "gpu_svr_code\tgpus\tlabel",
        "205\t1\tV100",
        "207\t2\tA100 x2",
        "",
        "Servers with runs in nsml_runs but no GPU count (set them with "
        "'nsml-etl gpu-servers set CODE GPUS'):",
        "gpu_svr_code\teng_full_name\truns",
        "300\tH100\t2",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[servers]\nA100 = 2\n", "a GPU server code is a number"),
        ("[servers]\n205 = 1.5\n", "whole number"),
        ("[servers]\n205 = -1\n", "expected 0 to 4096"),
        ("[servers]\n205 = { gpus = 1, lable = 'x' }\n", "unknown keys lable"),
        ("[gpus]\n205 = 1\n", "expected one [servers] table"),
        ("[servers\n", "not valid TOML"),
    ],
)
def test_a_bad_file_changes_nothing(run_cli, sqlite_url, tmp_path, text, message):
    toml = tmp_path / "gpus.toml"
    toml.write_text(text)
    result = run_cli("gpu-servers", "load", str(toml), "--db", sqlite_url)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "runs.db").exists()  # checked before the database is touched


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "gpus.toml: no such GPU servers file"),
        (b"[servers]\n205 = 1  # \xff\n", "gpus.toml: not valid TOML"),
    ],
)
def test_a_missing_or_non_utf8_file_is_exit_2(run_cli, sqlite_url, tmp_path, content, message):
    # Regression: the GPU servers file had its own reading, which let a file that is not UTF-8
    # through as an "unexpected UnicodeDecodeError" (exit 70, "a bug"); the config file's
    # reading, which it shares now, says what is wrong.
    toml = tmp_path / "gpus.toml"
    if content is not None:
        toml.write_bytes(content)
    result = run_cli("gpu-servers", "load", str(toml), "--db", sqlite_url)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "runs.db").exists()


def test_bad_arguments_are_usage_errors(run_cli, sqlite_url):
    assert run_cli("gpu-servers", "set", "205", "-1", "--db", sqlite_url).exit_code == 2
    result = run_cli("gpu-servers", "set", "205", "100000", "--db", sqlite_url)
    assert result.exit_code == 2 and "expected 0 to 4096" in result.stderr


def test_list_reads_only(run_cli, tmp_path):
    """Regression: ``list`` on a mistyped SQLite path created the file and nsml_gpu_servers in
    it, and listed nothing with exit 0 (as report and views did)."""
    (tmp_path / "nsml_runs.db").write_bytes(b"")
    typo = tmp_path / "nsml_run.db"
    result = run_cli("gpu-servers", "list", "--db", f"sqlite:///{typo}")
    assert result.exit_code == 4, result.output
    assert result.stderr == (
        f"Error: no nsml-etl tables in SQLite database {typo}: the file does not exist; "
        f"did you mean {tmp_path / 'nsml_runs.db'}?\n"
    )
    assert not typo.exists()
    # A database without the table (nothing set yet): the header, and no table made for it.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    result = run_cli("gpu-servers", "list", "--db", f"sqlite:///{other}")
    assert (result.exit_code, result.stdout) == (0, "gpu_svr_code\tgpus\tlabel\n")
    assert table_names(f"sqlite:///{other}") == {"notes"}
