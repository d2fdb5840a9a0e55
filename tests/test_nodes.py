"""export --nodes: each run's node list lands in nsml_run_nodes, exactly, with its change
history, on every database; a node list that fails fails its pair alone (the run lands);
paging, --skip-finished, hostile node ids, archives, and the node-hours of the views."""

from __future__ import annotations

import json

import pytest
from conftest import export_args, fetch_rows, run_with_terminal_stderr, table_names, write_pairs

from nsml_etl.testing.dataset import generated_nodes

NODE_ROW = ("node_id", "state", "resource_type", "container_image", "rank", "exit_code", "host")


def stored_nodes(db_url, pair=None):
    rows = fetch_rows(db_url, "SELECT * FROM nsml_run_nodes")
    if pair is not None:
        rows = [r for r in rows if (r["project_id"], r["run_name"]) == tuple(pair)]
    # sorted here: the databases' collations order ids differently
    return sorted(rows, key=lambda r: (r["project_id"], r["run_name"], r["node_id"]))


def as_tuples(rows):
    return sorted(
        (r["project_id"], r["run_name"], *(r[c] for c in NODE_ROW), r["fields"]) for r in rows
    )


def node_requests(sim, pair=None):
    return sum(
        count
        for path, count in sim.stats.by_path.items()
        if path.split("?")[0].endswith("/nodes")
        and (pair is None or f"/projects/{pair[0]}/runs/{pair[1]}/nodes" in path)
    )


def node(node_id, state="NODE_STATE_RUNNING", rank=0, exit_code=None, **extra):
    body = {
        "nodeId": node_id,
        "state": state,
        "resourceType": "[GPU] A100 2EA",
        "containerImage": "img:1",
        "rank": rank,
        "host": "gpu-01",
        **extra,
    }
    if exit_code is not None:
        body["exitCode"] = exit_code
    return body


def test_node_lists_land_exactly(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=2, runs_per_project=6)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes"))
    assert result.exit_code == 0, result.output

    expected = sorted(
        (
            project_id,
            run_name,
            n["nodeId"],
            n["state"],
            n["resourceType"],
            n["containerImage"],
            n["rank"],
            n.get("exitCode"),
            n["host"],
            '{"zone": "KR-1"}',  # the undocumented field; the run's projectName is not repeated
        )
        for project_id, run_name in sim.pairs()
        for n in generated_nodes(sim.run(project_id, run_name), sim.config.seed)
    )
    rows = stored_nodes(db_url)
    assert as_tuples(rows) == expected
    # the dataset shows what the feature is for: multi-node runs and non-zero exit codes
    assert len(rows) > len(sim.pairs())
    assert any(r["exit_code"] not in (None, 0) for r in rows)
    history = fetch_rows(db_url, "SELECT * FROM nsml_run_node_history")
    assert len(history) == len(rows) and all(h["valid_to"] is None for h in history)
    # one list page with the nodes and the empty page that ends it, per run
    assert node_requests(sim) == 2 * len(sim.pairs())


def test_nodes_table_exists_without_nodes(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=2)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(*export_args(sim, pairs_file, db_url))
    assert result.exit_code == 0, result.output
    assert {"nsml_run_nodes", "nsml_run_node_history"} <= table_names(db_url)
    assert stored_nodes(db_url) == [] and node_requests(sim) == 0
    result = run_cli("views", "--db", db_url)
    assert result.exit_code == 0, result.output
    timeline = fetch_rows(db_url, "SELECT nodes FROM nsml_run_timeline")
    assert [int(r["nodes"]) for r in timeline] == [1, 1]  # unknown: one node


def test_node_history_replaces_the_list(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=2)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    pair = sim.pairs()[0]
    other = sim.pairs()[1]

    def export():
        result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes"))
        assert result.exit_code == 0, result.output

    sim.put_nodes(*pair, [node("n0"), node("n1", rank=1), node("n2", rank=2)])
    export()
    export()  # nothing changed: no new versions
    assert len(fetch_rows(db_url, "SELECT * FROM nsml_run_node_history")) == 3 + len(
        generated_nodes(sim.run(*other), sim.config.seed)
    )
    # n1 fails, n2 vanishes from the list, n3 is new
    sim.put_nodes(
        *pair,
        [node("n0"), node("n1", "NODE_STATE_FAILED", 1, 137), node("n3", rank=3)],
    )
    export()
    current = stored_nodes(db_url, pair)
    assert [(r["node_id"], r["state"], r["exit_code"]) for r in current] == [
        ("n0", "NODE_STATE_RUNNING", None),
        ("n1", "NODE_STATE_FAILED", 137),
        ("n3", "NODE_STATE_RUNNING", None),
    ]
    versions = fetch_rows(
        db_url,
        "SELECT * FROM nsml_run_node_history WHERE project_id = :p AND run_name = :r "
        "ORDER BY node_id, valid_from",
        {"p": pair[0], "r": pair[1]},
    )
    by_node: dict[str, list] = {}
    for version in versions:
        by_node.setdefault(version["node_id"], []).append(version)
    assert [len(by_node[n]) for n in ("n0", "n1", "n2", "n3")] == [1, 2, 1, 1]
    assert by_node["n0"][0]["valid_to"] is None
    old, new = by_node["n1"]
    assert old["valid_to"] == new["valid_from"] and new["valid_to"] is None
    assert (old["state"], old["exit_code"]) == ("NODE_STATE_RUNNING", None)
    assert (new["state"], new["exit_code"]) == ("NODE_STATE_FAILED", 137)
    assert json.loads(old["content"])["state"] == "NODE_STATE_RUNNING"
    # the vanished node is gone from the current table, closed in the history with its row
    gone = by_node["n2"][0]
    assert gone["valid_to"] == new["valid_from"]
    assert json.loads(gone["content"]) == {
        "state": "NODE_STATE_RUNNING",
        "resource_type": "[GPU] A100 2EA",
        "container_image": "img:1",
        "rank": 2,
        "host": "gpu-01",
    }


def test_a_run_whose_node_list_fails_counts_once_in_the_progress(
    credentials, make_simulator, tmp_path
):
    # Regression: the bar counted fetched runs plus failed pairs, so a run that landed with its
    # node list failed counted twice and the bar passed 100% (4 of 3).
    sim = make_simulator(projects=1, runs_per_project=3)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    sim.break_node_list(*sim.pairs()[0], "500")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    args = export_args(sim, pairs_file, db, "--nodes", "--max-attempts", "1")
    code, out, err = run_with_terminal_stderr(list(args), stderr_tty=True)
    assert code == 1, (out, err)
    frames = [frame.strip() for frame in err.split("\r") if "run" in frame]
    # tqdm drops the total of a bar past it: "4run [00:00, ...]" instead of "4/3"
    assert frames[-1].startswith("100%") and "| 3/3 [" in frames[-1], frames
    assert not any(frame.startswith("4run") for frame in frames), frames
    # exported 3 + failed 1 - the 1 node list among them = the 3 requested
    assert "Summary: exported 3, failed 1 (1 of them node lists of runs that landed)," in out
    assert len(fetch_rows(db, "SELECT run_name FROM nsml_runs")) == 3


@pytest.mark.parametrize("from_page", [1, 2])
def test_failed_node_list_fails_its_pair_alone(
    run_cli, credentials, make_simulator, db_url, tmp_path, from_page
):
    sim = make_simulator(projects=1, runs_per_project=3, max_page_size=1)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    broken = sim.pairs()[0]
    sim.put_nodes(*broken, [node("n0"), node("n1", rank=1)])
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes"))
    assert result.exit_code == 0, result.output
    kept = as_tuples(stored_nodes(db_url, broken))
    assert len(kept) == 2

    sim.put_nodes(*broken, [node("n9")])  # would replace both, if the list could be read
    sim.break_node_list(*broken, "500", from_page=from_page)
    body = sim.run(*broken)
    sim.put_run(*broken, {**body, "note": "changed"})
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes", "--max-attempts", "2"))
    assert result.exit_code == 1, result.output
    assert f"node list page {from_page}: HTTP 500" in result.output
    assert (
        "Summary: exported 3, failed 1 (1 of them node lists of runs that landed)" in result.output
    )
    # the run landed, its stored nodes are left as they were, the other runs' nodes landed
    run = fetch_rows(
        db_url,
        "SELECT note, gone_at FROM nsml_runs WHERE project_id = :p AND run_name = :r",
        {"p": broken[0], "r": broken[1]},
    )
    assert run == [{"note": "changed", "gone_at": None}]
    assert as_tuples(stored_nodes(db_url, broken)) == kept
    for pair in sim.pairs()[1:]:
        assert len(stored_nodes(db_url, pair)) >= 1
    failures = fetch_rows(db_url, "SELECT project_id, run_name, message FROM nsml_export_failures")
    assert [(f["project_id"], f["run_name"]) for f in failures] == [broken]
    assert failures[0]["message"].startswith(f"node list page {from_page}: HTTP 500")


def test_node_list_pages_to_the_empty_page(run_cli, credentials, make_simulator, db_url, tmp_path):
    # the gateway gives two nodes a page whatever is asked: only the empty page ends the list
    sim = make_simulator(projects=1, runs_per_project=1, max_page_size=2)
    pair = sim.pairs()[0]
    sim.put_nodes(*pair, [node(f"n{i}", rank=i) for i in range(5)])
    pairs_file = write_pairs(tmp_path / "pairs.csv", [pair])
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes"))
    assert result.exit_code == 0, result.output
    assert [r["node_id"] for r in stored_nodes(db_url)] == [f"n{i}" for i in range(5)]
    assert node_requests(sim, pair) == 4  # pages 1-3, then the empty page 4


def test_node_seen_on_two_pages_is_kept_once(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=1, max_page_size=2)
    pair = sim.pairs()[0]
    # the list shifted by one while it was read: n1 ends page 1 and starts page 2
    sim.put_nodes(*pair, [node("n0"), node("n1", rank=1), node("n1", "NODE_STATE_FAILED", 1, 2)])
    pairs_file = write_pairs(tmp_path / "pairs.csv", [pair])
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes"))
    assert result.exit_code == 0, result.output
    rows = stored_nodes(db_url)
    assert [(r["node_id"], r["state"]) for r in rows] == [
        ("n0", "NODE_STATE_RUNNING"),
        ("n1", "NODE_STATE_FAILED"),  # the later sighting
    ]


def test_skip_finished_skips_stored_nodes(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=6)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    finished = {
        pair
        for pair in sim.pairs()
        if sim.run(*pair)["status"]
        in ("RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_STOPPED")
    }
    assert 0 < len(finished) < len(sim.pairs())
    # stored without nodes first: --nodes --skip-finished must still fetch the finished ones
    result = run_cli(*export_args(sim, pairs_file, db_url))
    assert result.exit_code == 0, result.output
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes", "--skip-finished"))
    assert result.exit_code == 0, result.output
    assert {(r["project_id"], r["run_name"]) for r in stored_nodes(db_url)} == set(sim.pairs())
    before = node_requests(sim)
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes", "--skip-finished"))
    assert result.exit_code == 0, result.output
    assert f"Skipped {len(finished)} runs" in result.output
    assert node_requests(sim) - before == 2 * (len(sim.pairs()) - len(finished))


HOSTILE_IDS = ["A", "a", "A ", "2/../../x", "노드-0", "n%2F1", "'; DROP TABLE x; --", "z" * 255]


def test_hostile_node_ids(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=2)
    pair, long_pair = sim.pairs()
    sim.put_nodes(*pair, [node(n, rank=i) for i, n in enumerate(HOSTILE_IDS)])
    sim.put_nodes(*long_pair, [node("y" * 256)])
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    result = run_cli(*export_args(sim, pairs_file, db_url, "--nodes"))
    assert sorted(r["node_id"] for r in stored_nodes(db_url, pair)) == sorted(HOSTILE_IDS)
    long_rows = stored_nodes(db_url, long_pair)
    if db_url.startswith("mysql"):
        # past MySQL's 255-character keys: that node list fails, its run lands
        assert result.exit_code == 1, result.output
        assert "node id 'yyyy" in result.output and "at most 255" in result.output
        assert long_rows == []
        assert len(fetch_rows(db_url, "SELECT * FROM nsml_runs")) == 2
    else:
        assert result.exit_code == 0, result.output
        assert [r["node_id"] for r in long_rows] == ["y" * 256]


def test_archive_carries_node_lists(run_cli, credentials, make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=4)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    sim.break_node_list(*sim.pairs()[0])
    archive = tmp_path / "raw.jsonl"
    source = f"sqlite:///{tmp_path / 'source.db'}"
    args = export_args(sim, pairs_file, source, "--nodes", "--save-raw", str(archive))
    result = run_cli(*args, "--max-attempts", "1")
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    carried = {(line["projectId"], line["runName"]): "nodeResponses" in line for line in lines}
    assert carried == {pair: pair != sim.pairs()[0] for pair in sim.pairs()}
    result = run_cli("load", str(archive), "--db", db_url)
    assert result.exit_code == 0, result.output
    assert as_tuples(stored_nodes(db_url)) == as_tuples(stored_nodes(source))
    assert len(stored_nodes(db_url)) >= 3


def test_nodes_setting_from_env_and_config(
    run_cli, credentials, make_simulator, tmp_path, monkeypatch
):
    sim = make_simulator(projects=1, runs_per_project=1)
    pairs_file = write_pairs(tmp_path / "pairs.csv", sim.pairs())
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    config = tmp_path / "etl.toml"
    config.write_text("nodes = true\n")
    result = run_cli(*export_args(sim, pairs_file, db, "--config", str(config)))
    assert result.exit_code == 0, result.output
    assert node_requests(sim) == 2
    monkeypatch.setenv("NSML_ETL_NODES", "0")  # the environment beats the file
    result = run_cli(*export_args(sim, pairs_file, db, "--config", str(config)))
    assert result.exit_code == 0, result.output
    assert node_requests(sim) == 2
    monkeypatch.setenv("NSML_ETL_NODES", "maybe")
    result = run_cli(*export_args(sim, pairs_file, db))
    assert result.exit_code == 2
    assert "NSML_ETL_NODES: must be true or false" in result.output


# Exports at noon UTC, a day apart (the week of Monday 5 January 2026).
E1, E2, E3 = "2026-01-09 12:00:00", "2026-01-10 12:00:00", "2026-01-11 12:00:00"


def test_views_count_node_hours(run_cli, credentials, make_simulator, monkeypatch, db_url):
    """A (p1/1, A100 with 2 GPUs, 3 nodes) waits at E1, runs at E2, completed at E3 with the
    run list's updateTime 06:00 on the 11th: it ran from the midpoint of E1 and E2 (00:00 on
    the 10th) for 30 h, on 3 nodes: 90 node-hours, 180 GPU-hours. B (p1/2, V100 with 1 GPU)
    runs from the same moment to its last sighting at E3: 36 h, its node list failing every
    time, so one node: 36 node-hours, 36 GPU-hours. Its exit codes: A's nodes 0, 0, 137."""
    sim = make_simulator(projects=0)

    def put(name, status, engine, code, updated):
        sim.put_run(
            "p1",
            name,
            {
                "projectId": "p1",
                "runName": name,
                "projectName": "P1",
                "status": status,
                "creator": "alice",
                "engFullName": engine,
                "gpuSvrCode": code,
                "imagePath": "img",
                "_createTime": "2026-01-09 19:00:00",  # 10:00 UTC, in Seoul time
                "_updateTime": updated,
            },
        )

    def export(at, expect=1):
        monkeypatch.setenv("NSML_ETL_CLOCK", at)
        result = run_cli(
            "export", "--all", "--nodes", "--db", db_url, "--base-url", sim.base_url,
            "--backoff-initial", "0.01", "--max-attempts", "1",
        )  # fmt: skip
        assert result.exit_code == expect, result.output  # B's node list fails each time

    sim.break_node_list("p1", "2")
    a_nodes = [node("a0", rank=0), node("a1", rank=1), node("a2", rank=2)]
    sim.put_nodes("p1", "1", a_nodes)
    for name, engine, code in (("1", "[GPU] A100 2EA", 207), ("2", "[GPU] V100 1EA", 205)):
        put(name, "RUN_STATE_PENDING", engine, code, "2026-01-09 19:00:00")
    export(E1)
    for name, engine, code in (("1", "[GPU] A100 2EA", 207), ("2", "[GPU] V100 1EA", 205)):
        put(name, "RUN_STATE_IN_PROGRESS", engine, code, "2026-01-10 10:00:00")
    export(E2)
    put("1", "RUN_STATE_COMPLETED", "[GPU] A100 2EA", 207, "2026-01-11 15:00:00")  # 06:00 UTC
    sim.put_nodes(
        "p1",
        "1",
        [
            node("a0", "NODE_STATE_COMPLETED", 0, 0),
            node("a1", "NODE_STATE_COMPLETED", 1, 0),
            node("a2", "NODE_STATE_FAILED", 2, 137),
        ],
    )
    export(E3)
    monkeypatch.delenv("NSML_ETL_CLOCK")
    for code, gpus in (("205", "1"), ("207", "2")):
        result = run_cli("gpu-servers", "set", code, gpus, "--db", db_url)
        assert result.exit_code == 0, result.output
    result = run_cli("views", "--db", db_url)
    assert result.exit_code == 0, result.output

    timeline = fetch_rows(db_url, "SELECT run_name, nodes FROM nsml_run_timeline")
    assert sorted((r["run_name"], int(r["nodes"])) for r in timeline) == [("1", 3), ("2", 1)]
    hours = fetch_rows(db_url, "SELECT * FROM nsml_run_hours_per_week")
    assert sorted(
        (
            str(r["week"])[:10],
            r["gpu_svr_code"],
            float(r["run_hours"]),
            float(r["node_hours"]),
            float(r["gpu_hours"]),
        )
        for r in hours
    ) == [("2026-01-05", 205, 36.0, 36.0, 36.0), ("2026-01-05", 207, 30.0, 90.0, 180.0)]
    usage = fetch_rows(db_url, "SELECT * FROM nsml_gpu_usage")
    assert sorted(
        (r["gpu_svr_code"], int(r["runs"]), int(r["active_runs"]), int(r["nodes"]),
         int(r["active_nodes"]))
        for r in usage
    ) == [(205, 1, 1, 1, 1), (207, 1, 0, 3, 0)]  # fmt: skip
    codes = fetch_rows(db_url, "SELECT * FROM nsml_node_exit_codes")
    assert sorted(
        (
            r["exit_code"],
            int(r["nodes"]),
            float(r["node_share"]),
            int(r["runs"]),
            int(r["failed_runs"]),
            float(r["failure_rate"]),
        )
        for r in codes
    ) == [(0, 2, 0.6667, 1, 0, 0.0), (137, 1, 0.3333, 1, 0, 0.0)]
