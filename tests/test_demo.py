"""First steps: ``make demo`` installs only what nsml-etl needs to run, and the demo prints
every command exactly as it runs.

Regressions: ``make demo`` installed the dev extra (pytest, hypothesis, ruff, trustme) before it
could start; and it printed ``nsml-etl export --all --db sqlite:///nsml_runs.db`` while it ran
that with ``--base-url`` (the simulator), ``--timeout 1`` and ``--backoff-initial 0.05``, so a
user who copied the printed command sent it to the real gateway; and it ran ``rm -f
nsml_runs.db`` where it was started, the default ``--db`` of every command: a real export made
from the clone was deleted without a word."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fetch_rows
from wcwidth import wcswidth

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")


def _make_dry_run(tmp_path: Path, target: str) -> str:
    """What ``make TARGET`` would run in a fresh clone (no .venv yet)."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = subprocess.run(
        ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_the_runtime_only_and_make_test_adds_the_dev_extra(tmp_path):
    demo = _make_dry_run(tmp_path, "demo")
    installs = [line for line in demo.splitlines() if "pip install" in line]
    assert len(installs) == 1 and installs[0].endswith(" -e ."), demo
    assert "dev" not in demo and "scripts/demo.sh" in demo
    test = _make_dry_run(tmp_path, "test")
    assert any(line.endswith("-e '.[dev]'") for line in test.splitlines()), test
    assert "pytest" in test


def _shim(tmp_path: Path) -> tuple[Path, Path]:
    """A directory whose nsml-etl records each call (arguments, NSML_ETL_CLOCK, the keys) and
    then becomes the real one (same process, so the demo's kill still reaches it)."""
    real = Path(sys.executable).parent / "nsml-etl"
    log = tmp_path / "calls.jsonl"
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    shim = shim_dir / "nsml-etl"
    shim.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as handle:\n"
        "    env = {k: os.environ.get(k) for k in ('NSML_ETL_CLOCK', 'NCP_ACCESS_KEY')}\n"
        "    handle.write(json.dumps({'argv': sys.argv[1:], 'env': env}) + '\\n')\n"
        f"os.execv({str(real)!r}, [{str(real)!r}, *sys.argv[1:]])\n"
    )
    shim.chmod(0o755)
    return shim_dir, log


def _printed_commands(stdout: str) -> list[tuple[dict[str, str], list[str]]]:
    """Each '$ ...' line as (environment assignments, command words)."""
    commands = []
    for line in stdout.splitlines():
        if not line.startswith("$ "):
            continue
        words = shlex.split(line[2:].removesuffix(" &"))
        env = {}
        while words and ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        commands.append((env, words))
    return commands


def test_the_demo_prints_each_command_exactly_as_it_runs(tmp_path):
    shim_dir, log = _shim(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    # A user's own export where the demo starts (the default --db): never touched.
    users = work / "nsml_runs.db"
    users.write_bytes(b"a real export, not the demo's")
    before = os.stat(users)
    path = os.pathsep.join(
        [str(shim_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCP_", "NSML_"))}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=work,
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Everything the demo wrote is in demo/; the user's file kept its bytes, inode and time.
    assert sorted(p.name for p in work.iterdir()) == ["demo", "nsml_runs.db"]
    after = os.stat(users)
    assert users.read_bytes() == b"a real export, not the demo's"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (work / "demo" / "report.html").stat().st_size > 0

    printed = _printed_commands(result.stdout)
    (keys_env, keys), *commands = printed
    assert keys[0] == "export"  # the demo keys, as the script sets them
    demo_keys = dict(word.split("=", 1) for word in keys[1:])
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # The first periodic export runs in the demo's Python process, not through the command.
    in_process = [c for c in commands if "--quiet" in c[1]]
    assert len(in_process) == 1
    through_shell = [c for c in commands if c not in in_process]
    assert [(c["argv"], c["env"]["NSML_ETL_CLOCK"]) for c in calls] == [
        (words[1:], env.get("NSML_ETL_CLOCK")) for env, words in through_shell
    ]
    assert all(words[0] == "nsml-etl" for _, words in commands)
    assert {c["env"]["NCP_ACCESS_KEY"] for c in calls} == {demo_keys["NCP_ACCESS_KEY"]}

    # Every export printed names the simulator it ran against; none goes to the gateway.
    exports = [words for _, words in commands if words[1] == "export"]
    assert len(exports) == 2
    for words in exports:
        url = words[words.index("--base-url") + 1]
        assert url.startswith("http://127.0.0.1:"), words
    faulty = exports[1]
    assert faulty[faulty.index("--timeout") + 1] == "1"
    assert faulty[faulty.index("--backoff-initial") + 1] == "0.05"
    # The periodic exports ran with the printed arguments: their batches say so.
    first_url = exports[0][exports[0].index("--base-url") + 1]
    batches = fetch_rows(
        f"sqlite:///{work / 'demo' / 'nsml_runs.db'}",
        "SELECT options FROM nsml_export_batches ORDER BY id",
    )
    periodic = [json.loads(b["options"]) for b in batches[:-1]]
    assert len(periodic) > 40
    assert {(o["base_url"], o["mode"]) for o in periodic} == {(first_url, "all")}
    # The env key -> column list lines its columns up, Korean keys too (a Hangul syllable
    # takes two cells); regression: the column after '학습률' stood three cells to the right.
    listing = result.stdout.split("== env key -> column\n", 1)[1].split("\n\n", 1)[0]
    starts = {wcswidth(line.rsplit(" ", 1)[0]) for line in listing.splitlines()}
    assert len(starts) == 1 and "학습률" in listing, listing
