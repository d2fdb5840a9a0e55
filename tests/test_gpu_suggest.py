"""nsml-etl gpu-servers suggest: GPU counts read from the stored server names, as a file that
gpu-servers load takes after review; export's summary says how many servers lack a count."""

from __future__ import annotations

import json
import tomllib

import pytest
from conftest import export_args, fetch_rows, table_names, write_pairs
from hypothesis import given
from hypothesis import strategies as st

from nsml_etl.warehouse.gpuservers import Suggestion, gpus_in_name, suggestions_toml


@pytest.mark.parametrize(
    ("name", "gpus"),
    [
        ("[GPU] A100 2EA, 24vCPU, 240GB Mem", 2),
        ("[GPU] V100 1EA, 8vCPU, 90GB Mem", 1),
        ("1 x NVIDIA A100", 1),
        ("8x H100 80GB", 8),
        ("A100 x 4", 4),
        ("[GPU] 2 GPUs, 16vCPU", 2),
        ("GPU 2개", 2),
        ("[Notebook] 4vCPU, 16GB Mem", 0),
        ("[CPU] 8vCPU, 32GB Mem", 0),
        ("[Notebook] T4 1EA, 4vCPU", 1),  # a notebook with a GPU says so
        # no guess: no count, two different counts, a count no server has, nothing at all
        ("[GPU] A100, 24vCPU", None),
        ("[Notebook] A100", None),
        ("H100 2EA + A100 1EA", None),
        ("A100 99999EA", None),
        ("24vCPU, 240GB Mem", None),
        ("", None),
        (None, None),
    ],
)
def test_known_names(name, gpus):
    assert gpus_in_name(name) == gpus


@given(st.one_of(st.none(), st.text(), st.integers(), st.binary()))
def test_any_name_gives_a_count_or_none(name):
    gpus = gpus_in_name(name)
    assert gpus is None or 0 <= gpus <= 4096


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**63 - 1),
            st.lists(st.text(), max_size=3),
            st.one_of(st.none(), st.integers(0, 4096)),
        ),
        max_size=5,
        unique_by=lambda s: s[0],
    )
)
def test_the_file_is_toml_with_every_stated_count(entries):
    """Whatever the names hold (quotes, backslashes, control characters, lone surrogates), the
    file parses, and holds exactly the servers with a count, with their names as the label."""
    suggestions = [Suggestion(code, tuple(names), 1, gpus) for code, names, gpus in entries]
    text = suggestions_toml(suggestions)
    text.encode("utf-8")  # printable: no lone surrogate
    servers = tomllib.loads(text)["servers"]
    assert {int(code): entry["gpus"] for code, entry in servers.items()} == {
        s.gpu_svr_code: s.gpus for s in suggestions if s.gpus is not None
    }
    for s in suggestions:
        if s.gpus is not None:
            label = " / ".join(s.names)
            expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in label)
            assert servers[str(s.gpu_svr_code)]["label"] == expected


NAMES = {
    101: "[Notebook] 4vCPU, 16GB Mem",
    205: "[GPU] V100 1EA, 8vCPU, 90GB Mem",
    207: "[GPU] A100 2EA, 24vCPU, 240GB Mem",
    300: 'H100 "big" box',  # says no count: a comment
    400: "1 x NVIDIA A100",
}


def _load_runs(run_cli, db_url, tmp_path, names):
    path = tmp_path / "runs.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"projectId": "p", "runName": str(n), "gpuSvrCode": code, "engFullName": name}
            )
            + "\n"
            for n, (code, name) in enumerate(names)
        )
    )
    result = run_cli("load", str(path), "--db", db_url)
    assert result.exit_code == 0, result.output
    return result


def test_suggest_then_load_sets_the_stated_counts(run_cli, db_url, tmp_path):
    _load_runs(run_cli, db_url, tmp_path, [*NAMES.items(), (207, NAMES[207])])
    assert run_cli("gpu-servers", "set", "205", "8", "--db", db_url).exit_code == 0
    result = run_cli("gpu-servers", "suggest", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[3:] == [
        "[servers]",
        '101 = { gpus = 0, label = "[Notebook] 4vCPU, 16GB Mem" }  # 1 run',
        '207 = { gpus = 2, label = "[GPU] A100 2EA, 24vCPU, 240GB Mem" }  # 2 runs',
        '400 = { gpus = 1, label = "1 x NVIDIA A100" }  # 1 run',
        "",
        "# No count in the name (or names that disagree): set GPUS by hand.",
        '# 300 = GPUS  # H100 "big" box; 1 run',
    ]
    assert "3 of 4 servers without a GPU count" in result.stderr
    # it wrote nothing: 205 keeps the count set by hand, the others still have none
    rows = fetch_rows(db_url, "SELECT gpu_svr_code, gpus FROM nsml_gpu_servers")
    assert rows == [{"gpu_svr_code": 205, "gpus": 8}]

    suggested = tmp_path / "gpus.toml"
    suggested.write_text(result.stdout, encoding="utf-8")
    assert run_cli("gpu-servers", "load", str(suggested), "--db", db_url).exit_code == 0
    rows = fetch_rows(db_url, "SELECT gpu_svr_code, gpus FROM nsml_gpu_servers ORDER BY 1")
    assert [(r["gpu_svr_code"], r["gpus"]) for r in rows] == [
        (101, 0),
        (205, 8),
        (207, 2),
        (400, 1),
    ]
    gpu_hours = fetch_rows(db_url, "SELECT gpu_svr_code FROM nsml_gpu_servers_without_count")
    assert gpu_hours == [{"gpu_svr_code": 300}]


def test_a_server_whose_names_disagree_gets_no_guess(run_cli, sqlite_url, tmp_path):
    _load_runs(run_cli, sqlite_url, tmp_path, [(207, "A100 2EA"), (207, "A100 4EA")])
    result = run_cli("gpu-servers", "suggest", "--db", sqlite_url)
    assert result.stdout.splitlines()[-1] == "# 207 = GPUS  # A100 2EA / A100 4EA; 2 runs"


def test_suggest_reads_only(run_cli, tmp_path):
    """Like list: a mistyped SQLite path is exit 4 and stays absent; a database without the
    GPU servers table gets none."""
    typo = tmp_path / "nsml_run.db"
    result = run_cli("gpu-servers", "suggest", "--db", f"sqlite:///{typo}")
    assert result.exit_code == 4 and "the file does not exist" in result.stderr
    assert not typo.exists()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _load_runs(run_cli, url, tmp_path, [(207, NAMES[207])])
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP VIEW nsml_gpu_servers_without_count")
        conn.exec_driver_sql("DROP VIEW nsml_gpu_usage")
        conn.exec_driver_sql("DROP VIEW nsml_run_hours_per_week")
        conn.exec_driver_sql("DROP TABLE nsml_gpu_servers")
    engine.dispose()
    result = run_cli("gpu-servers", "suggest", "--db", url)
    assert result.exit_code == 0 and "207 = { gpus = 2" in result.stdout
    assert "nsml_gpu_servers" not in table_names(url)


def test_export_says_once_how_many_servers_lack_a_count(
    run_cli, credentials, simulator, db_url, tmp_path
):
    pairs_file = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    used = {r["gpu_svr_code"] for r in simulator_rows(run_cli, simulator, pairs_file, db_url)}
    result = run_cli(*export_args(simulator, pairs_file, db_url, "-q"))
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.endswith(
        f"; {len(used)} servers have no GPU count, so their GPU-hours are unknown: "
        "nsml-etl gpu-servers suggest proposes counts"
    )
    assert (result.stdout + result.stderr).count("no GPU count") == 1
    for code in used:
        assert run_cli("gpu-servers", "set", str(code), "1", "--db", db_url).exit_code == 0
    result = run_cli(*export_args(simulator, pairs_file, db_url, "--log-format", "json"))
    finished = [json.loads(line) for line in result.stderr.splitlines()][-1]
    assert finished["event"] == "batch_finished" and finished["servers_without_gpus"] == 0
    assert "no GPU count" not in finished["message"]


def simulator_rows(run_cli, simulator, pairs_file, db_url):
    """Export once; the runs that landed."""
    assert run_cli(*export_args(simulator, pairs_file, db_url)).exit_code == 0
    return fetch_rows(db_url, "SELECT gpu_svr_code FROM nsml_runs WHERE gpu_svr_code IS NOT NULL")
