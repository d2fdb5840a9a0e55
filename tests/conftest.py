"""Shared fixtures: credentials, a simulator over loopback HTTP, fresh databases, the CLI."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from nsml_etl.cli import main
from nsml_etl.testing.simulator import Simulator, SimulatorConfig

ACCESS_KEY = "AKTEST00000000000000"
SECRET_KEY = "SKtestSECRETvalue-7f3a9c"  # recognizable: leak tests grep for it
SERVER_URL_ENV = {
    "postgresql": "NSML_ETL_TEST_POSTGRES_URL",
    "mysql": "NSML_ETL_TEST_MYSQL_URL",
}
REQUIRE_SERVERS = os.environ.get("NSML_ETL_REQUIRE_SERVER_DBS") == "1"
# The server-database tests create (and drop) one database per test, named this prefix and a
# random suffix: set it to share a server with other users (letters, digits and _ only).
DB_PREFIX_ENV = "NSML_ETL_TEST_DB_PREFIX"
DEFAULT_DB_PREFIX = "nsml_etl_test_"


def database_prefix() -> str:
    prefix = os.environ.get(DB_PREFIX_ENV) or DEFAULT_DB_PREFIX
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise pytest.UsageError(f"{DB_PREFIX_ENV}={prefix!r}: use letters, digits and _ only")
    return prefix


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCP_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("NCP_SECRET_KEY", SECRET_KEY)
    monkeypatch.delenv("NCP_APIGW_API_KEY", raising=False)
    for name in ("NSML_ETL_DB_URL", "NSML_BASE_URL", "NSML_ETL_TABLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_simulator() -> Iterator:
    started: list[Simulator] = []

    def make(**overrides) -> Simulator:
        config = SimulatorConfig(access_key=ACCESS_KEY, secret_key=SECRET_KEY, **overrides)
        sim = Simulator(config).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator) -> Simulator:
    return make_simulator(projects=2, runs_per_project=12)


def _server_database(kind: str) -> Iterator[str]:
    """A fresh database on the server for one test, dropped afterwards."""
    url = os.environ.get(SERVER_URL_ENV[kind])
    if not url:
        message = f"{SERVER_URL_ENV[kind]} is not set"
        if REQUIRE_SERVERS:
            pytest.fail(f"{message}, and NSML_ETL_REQUIRE_SERVER_DBS=1 forbids skipping")
        pytest.skip(message)
    name = f"{database_prefix()}{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if kind == "mysql":
                conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            else:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        if REQUIRE_SERVERS:
            raise
        pytest.skip(f"{kind} server not reachable: {exc.orig}")
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


# Every database family, for the tests that run on each (the db_url fixture's parameters).
DATABASE_KINDS = ["sqlite", "postgresql", "mysql", "duckdb"]


@pytest.fixture(params=DATABASE_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database kind in turn, fresh and empty. The embedded ones (SQLite, DuckDB) are a
    file in the test's folder; the servers' a database of their own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
    elif request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'runs.duckdb'}"
    else:
        yield from _server_database(request.param)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def write_pairs(path: Path, pairs, header=("project_id", "run_name")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(pairs)
    return path


@pytest.fixture
def run_cli():
    """Invoke the real CLI in-process; returns click's Result (stdout/stderr separate)."""

    def invoke(*args: str, input: str | bytes | None = None):
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def export_args(sim, pairs_file: Path | str, db_url: str, *extra: str) -> tuple[str, ...]:
    """The arguments of ``nsml-etl export`` for a pairs file against simulator ``sim``, with
    retries that wait 10 ms, not seconds; ``extra`` are further options."""
    return (
        "export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url,
        "--backoff-initial", "0.01", *extra,
    )  # fmt: skip


README = Path(__file__).parent.parent / "README.md"


def readme_python(heading: str) -> str:
    """The first Python block after ``heading`` in the README."""
    section = README.read_text(encoding="utf-8").split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def fetch_rows(db_url: str, sql: str, params: dict | None = None) -> list[dict]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.text(sql), params or {})]
    finally:
        engine.dispose()


def drop_views(conn) -> None:
    """Drop every view of the database: export and load create them, and SQLite (and, for a
    dropped column, PostgreSQL) refuse to change a table's columns that a view reads, as the
    tests that break or age a table on purpose do."""
    for view in sa.inspect(conn).get_view_names():
        conn.exec_driver_sql(f"DROP VIEW {conn.dialect.identifier_preparer.quote(view)}")


def table_names(db_url: str) -> set[str]:
    engine = sa.create_engine(db_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- the CLI in a process of its own (signals, terminals, closed streams) --------------------


class CliProcess:
    """`python -m nsml_etl.cli ARGS` in a session of its own; stderr goes to a file that the test
    can watch while the process runs."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
        self.stderr_path = tmp_path / "stderr.txt"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nsml_etl.cli", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def finish(self, code: int) -> tuple[str, str]:
        """(stdout, stderr) once it ended with ``code``, cleanly: no traceback, no 'Aborted!'."""
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        err = self.stderr()
        assert self.proc.returncode == code, (out, err)
        assert "Traceback" not in err and "Aborted!" not in err, err
        return out, err


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def run_with_terminal_stderr(
    args: list[str], stderr_tty: bool, columns: int = 100
) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal ``columns`` wide (or a pipe); (exit code,
    stdout, stderr)."""
    env = {**os.environ, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}
    command = [sys.executable, "-m", "nsml_etl.cli", *args]
    if not stderr_tty:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr
    master, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide: make it 30 rows by ``columns``.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=60), out, b"".join(chunks).decode(errors="replace")
