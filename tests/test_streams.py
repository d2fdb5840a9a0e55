"""Output paths and the standard streams: a FIFO, a device or /dev/stdout is written in place,
never replaced; a regular file whole or not at all; closed standard streams are exit codes.

Regressions: ``pairs --out`` and ``--failures-out`` wrote aside and renamed over whatever was at
the path, so a device node (``/dev/full``, as root) or a FIFO became a regular file; ``report
--html /dev/stdout >> FILE`` truncated FILE; ``--pairs -`` and ``load -`` with stdin closed were
an AttributeError (exit 70); ``report >&-`` exited 0 having written nothing and ``pairs --out -
>&-`` was a TypeError (exit 70)."""

from __future__ import annotations

import csv
import fcntl
import os
import shlex
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ACCESS_KEY, SECRET_KEY, fetch_rows, write_pairs

import nsml_etl
from nsml_etl.cli import main

NSML_ETL = str(Path(sys.executable).parent / "nsml-etl")
# Enough for every output of these tests, so that a writer never waits for the reader.
PIPE_BYTES = 1 << 20


class Fifo:
    """A FIFO at ``path`` with its read end held open (non-blocking), so a writer never waits
    for a reader, and a test can read what was written once the command is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def read(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:  # nothing (more) written, and a writer still open
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self.fd)
        return b"".join(chunks)

    def is_fifo(self) -> bool:
        return stat.S_ISFIFO(os.lstat(self.path).st_mode)


def _device(path: Path, minor: int) -> Path:
    """A character device like /dev/null (minor 3) or /dev/full (minor 7), at ``path``."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("needs CAP_MKNOD to make a device node")
    return path


def _is_char_device(path: Path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCP_", "NSML_"))}
    return {**env, "NCP_ACCESS_KEY": ACCESS_KEY, "NCP_SECRET_KEY": SECRET_KEY}


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` run by bash (for ``<&-``, ``>&-`` and ``>>``), nsml-etl being ours."""
    return subprocess.run(
        ["bash", "-c", command.replace("nsml-etl ", shlex.quote(NSML_ETL) + " ")],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pairs_out_writes_a_fifo_or_device_in_place_and_a_symlink_s_target(
    run_cli, credentials, simulator, tmp_path
):
    fifo = Fifo(tmp_path / "pairs.fifo")
    result = run_cli("pairs", "--out", str(fifo.path), "--base-url", simulator.base_url)
    assert result.exit_code == 0, result.output
    lines = fifo.read().decode().splitlines()
    assert lines[0] == "project_id,run_name,status,create_time,update_time"
    assert len(lines) == 1 + len(simulator.pairs()) and fifo.is_fifo()

    # A full disk, as /dev/full is: the device stays, the error is one line and exit 2.
    full = _device(tmp_path / "full", 7)
    result = run_cli("pairs", "--out", str(full), "--base-url", simulator.base_url)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {full}: cannot write: No space left on device\n"
    assert _is_char_device(full)

    # Through a symlink, the target is replaced whole and the link stays.
    target = tmp_path / "target.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target.name)
    result = run_cli("pairs", "--out", str(link), "--base-url", simulator.base_url)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == target.name
    assert target.read_text().splitlines()[0].startswith("project_id,run_name")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the file keeps its permissions
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "full",
        "link.csv",
        "pairs.fifo",
        "target.csv",
    ]


def test_a_block_device_or_a_socket_is_refused_and_left_alone(
    run_cli, credentials, simulator, tmp_path
):
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        result = run_cli("pairs", "--out", str(tmp_path / "sock"), "--base-url", simulator.base_url)
        assert result.exit_code == 2
        assert "sock: is a socket; nsml-etl writes regular files" in result.stderr
        assert stat.S_ISSOCK(os.lstat(tmp_path / "sock").st_mode)
    disk = tmp_path / "disk"
    try:
        os.mknod(disk, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except PermissionError:
        pytest.skip("needs CAP_MKNOD to make a device node")
    result = run_cli("pairs", "--out", str(disk), "--base-url", simulator.base_url)
    assert result.exit_code == 2 and "disk: is a block device" in result.stderr
    assert stat.S_ISBLK(os.lstat(disk).st_mode)
    assert simulator.stats.requests == 0  # refused before the run list is asked for


def test_export_writes_its_archive_and_failures_in_place_on_fifos_and_devices(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=6)
    pairs_file = write_pairs(tmp_path / "pairs.csv", [*sim.pairs(), ("nope", "1")])
    raw, failures = Fifo(tmp_path / "raw.fifo"), Fifo(tmp_path / "failures.fifo")
    common = ("export", "--pairs", str(pairs_file), "--db", db_url, "--base-url", sim.base_url)
    result = run_cli(*common, "--save-raw", str(raw.path), "--failures-out", str(failures.path))
    assert result.exit_code == 1, result.output
    archived = raw.read().decode().splitlines()
    assert len(archived) == 6 and all('"response":' in line for line in archived)
    assert failures.read().decode().splitlines() == [
        "project_id,run_name,reason",
        "nope,1,HTTP 404 errorCode 300: Not Found (no such project or run)",
    ]
    assert raw.is_fifo() and failures.is_fifo()
    count = fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"]
    assert count == 6

    null = _device(tmp_path / "null", 3)
    result = run_cli(*common, "--save-raw", str(null), "--failures-out", str(null))
    assert result.exit_code == 1, result.output
    assert _is_char_device(null)
    databases = {"runs.db", "runs.duckdb", "runs.duckdb.nsml-etl-lock"}
    assert {p.name for p in tmp_path.iterdir()} - databases == {
        "failures.fifo",
        "null",
        "pairs.csv",
        "raw.fifo",
    }


def test_the_python_api_writes_archive_and_failures_in_place_too(
    credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=4)
    raw, failures = Fifo(tmp_path / "raw.fifo"), Fifo(tmp_path / "failures.fifo")
    report = nsml_etl.export(
        [*sim.pairs(), ("nope", "1")], db_url=db_url, base_url=sim.base_url, save_raw=raw.path
    )
    report.write_failures(failures.path)
    assert (report.exported, len(report.failed)) == (4, 1)
    assert len(raw.read().splitlines()) == 4
    assert failures.read().decode().splitlines()[1].startswith("nope,1,HTTP 404")
    assert raw.is_fifo() and failures.is_fifo()
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == 4


def test_report_writes_into_what_stdout_is_and_csv_files_into_fifos(
    run_cli, credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=3)
    exported = run_cli("export", "--all", "--db", db_url, "--base-url", sim.base_url)
    assert exported.exit_code == 0, exported.output
    # stdout is a file opened to append: /dev/fd/1 adds to it (reopened, it was truncated).
    out = tmp_path / "out.html"
    out.write_text("kept\n")
    done = _shell(
        f"nsml-etl report --db {shlex.quote(db_url)} --html /dev/fd/1 >> out.html", tmp_path
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("kept\n<!doctype html>") and text.rstrip().endswith("</html>")

    out_dir = tmp_path / "csv"
    out_dir.mkdir()
    fifo = Fifo(out_dir / "runs_by_project.csv")
    result = run_cli("report", "--db", db_url, "--out-dir", str(out_dir))
    assert result.exit_code == 0, result.output
    assert fifo.read().decode().splitlines()[0].startswith("project_name,project_id,runs,")
    assert fifo.is_fifo() and (out_dir / "analytics_period.csv").is_file()


def test_pairs_out_dev_fd_1_writes_into_stdout_s_file(credentials, simulator, tmp_path):
    (tmp_path / "pairs.csv").write_text("first line\n")
    done = _shell(
        f"nsml-etl pairs --base-url {simulator.base_url} --out /dev/fd/1 >> pairs.csv", tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "pairs.csv").read_text().splitlines()
    assert lines[:2] == ["first line", "project_id,run_name,status,create_time,update_time"]
    assert len(lines) == 2 + len(simulator.pairs())


# -- closed standard streams ------------------------------------------------------------------


def test_reading_a_closed_stdin_is_exit_2_before_any_request(simulator, tmp_path):
    db = tmp_path / "runs.db"
    done = _shell(
        f"nsml-etl export --pairs - --db sqlite:///{db} --base-url {simulator.base_url} <&-",
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "Error: -: standard input is closed; pipe the pairs file in, or give its path "
        "instead of -\n"
    )
    done = _shell(f"nsml-etl load - --db sqlite:///{db} <&-", tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert "Error: -: standard input is closed; pipe the archive in" in done.stderr
    assert simulator.stats.requests == 0 and not db.exists()

    # The Python API raises its InputError.
    code = (
        "import nsml_etl, sys\n"
        "try:\n"
        f"    nsml_etl.load('-', db_url='sqlite:///{db}')\n"
        "except nsml_etl.InputError as exc:\n"
        "    sys.stderr.write(str(exc))\n"
    )
    done = _shell(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} <&-", tmp_path)
    assert done.stderr.startswith("-: standard input is closed"), done.stderr


def test_writing_to_a_closed_stdout_is_exit_141(make_simulator, db_url, tmp_path):
    sim = make_simulator(projects=1, runs_per_project=3)
    url = shlex.quote(db_url)
    export = f"nsml-etl export --all --db {url} --base-url {sim.base_url}"
    done = _shell(f"{export} --failures-out failed.csv >&-", tmp_path)
    assert (done.returncode, done.stderr) == (141, "")
    assert fetch_rows(db_url, "SELECT COUNT(*) AS n FROM nsml_runs")[0]["n"] == 3  # landed
    assert (tmp_path / "failed.csv").read_text() == "project_id,run_name,reason\n"
    # With --log-format json nothing goes to stdout: nothing is lost, the exit code stays.
    done = _shell(f"{export} --log-format json >&-", tmp_path)
    assert done.returncode == 0, done.stderr
    for command in (
        f"nsml-etl report --db {url}",
        f"nsml-etl pairs --out - --base-url {sim.base_url}",
    ):
        done = _shell(f"{command} >&-", tmp_path)
        assert (done.returncode, done.stderr) == (141, ""), command


# Regression: `export --save-raw /dev/full --failures-out FILE` stopped with exit 74 without
# writing FILE: the pair that had failed before the disk filled (recorded in
# nsml_export_failures) was missing from it, and a FILE left by an earlier export stayed as it
# was, so a retry job re-sent the old pairs and never the new failure
def test_an_unwritable_archive_still_writes_failures_out(
    credentials, make_simulator, db_url, tmp_path
):
    sim = make_simulator(projects=1, runs_per_project=3)
    project = next(iter(sim.data))
    pairs = write_pairs(
        tmp_path / "p.csv", [(project, "nosuchrun"), (project, "1"), (project, "2")]
    )
    failures = tmp_path / "failures.csv"
    failures.write_text("project_id,run_name\nstale,old\n")
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--pairs",
            str(pairs),
            "--db",
            db_url,
            "--base-url",
            sim.base_url,
            "--concurrency",
            "1",
            "--save-raw",
            "/dev/full",
            "--failures-out",
            str(failures),
        ],
    )
    assert result.exit_code == 74, result.output
    assert [b["status"] for b in fetch_rows(db_url, "SELECT status FROM nsml_export_batches")] == [
        "failed"
    ]
    recorded = {
        r["run_name"] for r in fetch_rows(db_url, "SELECT run_name FROM nsml_export_failures")
    }
    with failures.open(newline="") as handle:
        listed = {row["run_name"] for row in csv.DictReader(handle)}
    assert recorded == {"nosuchrun"} and listed == recorded


def test_a_metrics_file_on_a_device_is_written_in_place(credentials, simulator, db_url, tmp_path):
    # Regression: prometheus_client's write_to_textfile writes aside and renames, so a
    # --metrics-file naming a device (or a FIFO) was replaced by a regular file, unlike every
    # other output of the tool.
    device = _device(tmp_path / "null", 3)
    pairs = write_pairs(tmp_path / "pairs.csv", simulator.pairs())
    result = CliRunner().invoke(
        main,
        ["export", "--pairs", str(pairs), "--db", db_url, "--base-url", simulator.base_url,
         "--metrics-file", str(device)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _is_char_device(device)
    assert "could not write the metrics file" not in result.stderr
    regular = tmp_path / "m.prom"  # a regular file is still replaced whole, by write_to_textfile
    result = CliRunner().invoke(
        main,
        ["export", "--pairs", str(pairs), "--db", db_url, "--base-url", simulator.base_url,
         "--metrics-file", str(regular)],
    )  # fmt: skip
    assert result.exit_code == 0 and "nsml_etl_exit_code{" in regular.read_text()
    link = tmp_path / "link.prom"  # through a symlink, the target is replaced and the link stays
    link.symlink_to(regular)
    regular.write_text("old\n")
    result = CliRunner().invoke(
        main,
        ["export", "--pairs", str(pairs), "--db", db_url, "--base-url", simulator.base_url,
         "--metrics-file", str(link)],
    )  # fmt: skip
    assert result.exit_code == 0 and link.is_symlink()
    assert "nsml_etl_exit_code{" in regular.read_text()
