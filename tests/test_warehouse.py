"""The one Warehouse object: nothing else makes an engine, and a command that must not write
(report, gpu-servers list, check, a dry run; views, on a database no export made) never
creates a SQLite file or a table, on every database."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from conftest import table_names, write_pairs

import nsml_etl
from nsml_etl.errors import DatabaseError
from nsml_etl.warehouse import DRY_RUN, READ, WRITE, Warehouse

PACKAGE = Path(nsml_etl.__file__).parent
# The warehouse's own modules: engine.py makes the engine, warehouse.py is the only caller.
MAKERS = {PACKAGE / "warehouse" / "engine.py", PACKAGE / "warehouse" / "warehouse.py"}


def _engine_makers(source: Path) -> list[str]:
    """``file:line`` of every call of a function named create_engine in ``source``, however it
    was imported (``sa.create_engine``, ``engine.create_engine``, ``create_engine``)."""
    calls = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "create_engine":
                calls.append(f"{source.relative_to(PACKAGE)}:{node.lineno}")
    return calls


def test_no_module_but_the_warehouse_makes_an_engine():
    """Regression: five places opened, checked and disposed of an engine, each with its own
    copy of the checks, and four bugs of one kind (a reading command creating a SQLite file or
    a table) were fixed one copy at a time."""
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30  # the scan sees the package, sub-packages included
    elsewhere = [
        call for source in sources if source not in MAKERS for call in _engine_makers(source)
    ]
    assert elsewhere == []
    assert _engine_makers(PACKAGE / "warehouse" / "warehouse.py")  # the one that does


def _commands(simulator, pairs: Path) -> dict[str, tuple[tuple[str, ...], int]]:
    """Each command that must not write, and its exit code on a database no export made."""
    dry_run = ("export", "--pairs", str(pairs), "--base-url", simulator.base_url, "--dry-run")
    return {
        "report": (("report",), 4),
        "views": (("views",), 4),  # it writes, but only views over what an export made
        "gpu-servers list": (("gpu-servers", "list"), 0),
        "check": (("check", "--base-url", simulator.base_url), 0),
        "export --dry-run": (dry_run, 0),
        # Regression: the stored finished runs were read by connecting, which made the file.
        "export --dry-run --skip-finished": ((*dry_run, "--skip-finished"), 0),
    }


COMMANDS = [
    "report",
    "views",
    "gpu-servers list",
    "check",
    "export --dry-run",
    "export --dry-run --skip-finished",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_that_must_not_write_creates_no_file_and_no_table(
    run_cli, credentials, simulator, db_url, tmp_path, command
):
    args, code = _commands(simulator, write_pairs(tmp_path / "pairs.csv", simulator.pairs()))[
        command
    ]
    embedded = db_url.startswith(("sqlite", "duckdb"))
    db_file = Path(db_url.split(":///", 1)[1]) if embedded else None
    if db_file is not None:
        result = run_cli(*args, "--db", db_url)
        # A SQLite or DuckDB file not made yet: refused, or found missing, and left so.
        assert result.exit_code == (4 if command == "gpu-servers list" else code), result.output
        assert not db_file.exists()
        # Now an empty database: no table may appear in it.
        if db_url.startswith("sqlite"):
            sqlite3.connect(db_file).close()
        else:
            duckdb.connect(str(db_file)).close()
    result = run_cli(*args, "--db", db_url)
    assert result.exit_code == code, result.output
    assert table_names(db_url) == set()
    assert _view_names(db_url) == []


def _view_names(db_url: str) -> list[str]:
    engine = sa.create_engine(db_url)
    try:
        return sa.inspect(engine).get_view_names()
    finally:
        engine.dispose()


def test_a_read_refuses_a_missing_sqlite_file_before_connecting(tmp_path):
    missing = tmp_path / "nsml_run.db"
    with pytest.raises(DatabaseError, match="the file does not exist"):
        Warehouse.open(f"sqlite:///{missing}", READ, table="nsml_runs")
    assert not missing.exists()


def test_a_dry_run_on_a_missing_sqlite_file_answers_without_making_it(tmp_path):
    missing = tmp_path / "runs.db"
    with Warehouse.open(f"sqlite:///{missing}", DRY_RUN, table="nsml_runs") as warehouse:
        assert warehouse.is_new and not warehouse.had_table
        assert warehouse.stored_pairs(["RUN_STATE_COMPLETED"]) == set()
        # Whatever would connect anyway is stopped before SQLite makes the file.
        with pytest.raises(RuntimeError, match="must not create it"):
            warehouse.engine.connect()
    assert not missing.exists()


def test_a_write_makes_the_file_and_its_parts_share_one_engine(tmp_path):
    path = tmp_path / "runs.db"
    with Warehouse.open(f"sqlite:///{path}", WRITE, table="nsml_runs") as warehouse:
        assert warehouse.is_new
        assert warehouse.store.schema is warehouse.schema
        assert warehouse.schema.engine is warehouse.engine
        warehouse.batch_log("export", {}).open()
    assert path.exists()
    assert {"nsml_runs", "nsml_export_batches"} <= table_names(f"sqlite:///{path}")


def test_a_database_opened_without_a_runs_table_has_no_schema(sqlite_url):
    with Warehouse.open(sqlite_url, WRITE) as warehouse, pytest.raises(ValueError):
        warehouse.schema  # noqa: B018 - the property is what is tested
