#!/usr/bin/env bash
# A real export against the bundled simulator into ./demo/nsml_runs.db, then a look at it:
# first two weeks and more of simulated time (runs created, waiting, running, finishing, one or
# two deleted upstream) exported every 6 simulated hours, so the report has a real history,
# queue waits and run-hours; then one export with injected faults, the way cron would run it.
# Everything the demo writes is in ./demo/ (its database, the simulator's address and clock,
# the HTML report), and it deletes only those files of its own: ./nsml_runs.db, the default
# --db of every command, may hold a real export. Every nsml-etl command is printed exactly as
# it runs ('$ ...'), so a copy of it goes where the demo's went: to the simulator, never to
# the real gateway.
set -euo pipefail

show() {  # show [NAME=VALUE...] COMMAND ARGS...: print a command as a shell would take it
    printf '$'
    printf ' %q' "$@"
    printf '\n'
}
run() {  # run [NAME=VALUE...] COMMAND ARGS...: show it, then run exactly that
    show "$@"
    env "$@"
}

mkdir -p demo
# Demo keys: the simulator accepts exactly these; real keys never belong in a script.
KEYS=(NCP_ACCESS_KEY=AKDEMO0000000000000 NCP_SECRET_KEY=demo-secret-not-a-real-key)
show export "${KEYS[@]}"
export "${KEYS[@]}"
DB=demo/nsml_runs.db
rm -f demo/address.txt demo/clock.txt demo/clock.tmp demo/report.html demo/gpus.toml "$DB"  # its own
SIM=(--seed 7 --projects 3 --runs 25)
# The simulated timeline starts on the Monday two weeks before this one and ends now, so the
# report's default period (the last 8 weeks) covers it; the first export is 6 hours in.
read -r EPOCH FIRST NOW < <(python - <<'PY'
from datetime import UTC, datetime, timedelta
now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
epoch = (now - timedelta(days=now.weekday())).replace(hour=0) - timedelta(weeks=2)
print(epoch.isoformat(), (epoch + timedelta(hours=6)).isoformat(), now.isoformat())
PY
)

start_simulator() {  # start_simulator ARGS...: serve in the background until the next call
    rm -f demo/address.txt
    local command=(nsml-etl simulate --port 0 "${SIM[@]}" --epoch "$EPOCH"
                   --address-file demo/address.txt "$@")
    echo "$(show "${command[@]}") &"
    "${command[@]}" &
    sim=$!
    for _ in $(seq 100); do [ -s demo/address.txt ] && break; sleep 0.1; done
    [ -s demo/address.txt ] || { echo "simulator did not start" >&2; exit 1; }
    url=$(cat demo/address.txt)
}
trap 'kill ${sim:-} 2>/dev/null || true' EXIT

echo "== simulated time: $EPOCH to $NOW (UTC), an export every 6 hours"
echo "$EPOCH" > demo/clock.txt
start_simulator --clock-file demo/clock.txt
# Some 80 exports, in one Python process to spare each its start-up; each one is exactly
# the command printed here, at the simulated moment (NSML_ETL_CLOCK), which the simulator
# serves too (its clock file). With each run's node list (--nodes), and as a nightly job would
# (--skip-finished): a finished run is not fetched again once its nodes are stored, which keeps
# the demo as quick as it was without node lists.
EXPORT=(export --all --skip-finished --nodes --db "sqlite:///$DB" --base-url "$url" --quiet)
show NSML_ETL_CLOCK="$FIRST" nsml-etl "${EXPORT[@]}"
echo "   and the same every 6 simulated hours until $NOW (in one Python process)"
python - "$FIRST" "$NOW" "${EXPORT[@]}" <<'PY'
import contextlib
import io
import os
import re
import sys
from datetime import datetime, timedelta

from nsml_etl.cli import main

moment, now = datetime.fromisoformat(sys.argv[1]), datetime.fromisoformat(sys.argv[2])
arguments = sys.argv[3:]  # the export command printed above, without its program name
# Every summary says how many servers lack a GPU count; the demo shows it on its first line.
GPU_NOTE = re.compile(r"; \d+ servers? ha(?:s|ve) no GPU count[^;]*")
said_gpus = False
while moment < now:
    with open("demo/clock.tmp", "w") as handle:
        handle.write(moment.isoformat())
    os.replace("demo/clock.tmp", "demo/clock.txt")
    os.environ["NSML_ETL_CLOCK"] = moment.isoformat()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
        main(arguments, standalone_mode=False)
    lines = output.getvalue().splitlines()
    gone = [line.split("\t")[:2] for line in lines if "HTTP 404" in line]
    if moment.hour == 0 or gone:  # one line a day, and each run found deleted upstream
        note = "".join(f"; run {' '.join(g).strip()} deleted upstream" for g in gone)
        summary = lines[-1].removeprefix("Summary: ")
        if said_gpus:
            summary = GPU_NOTE.sub("", summary)
        said_gpus = said_gpus or GPU_NOTE.search(summary) is not None
        print(f"   {moment:%a %d %b %H:%M}  {summary}{note}")
    moment += timedelta(hours=6)
PY
kill $sim; wait $sim 2>/dev/null || true

echo
echo "== now, with faults (a short timeout and backoff, so the demo does not wait for them),"
echo "   and a few runs whose node list answers 500 every time: each is a failed pair, its run lands"
start_simulator --clock "$NOW" --fault-rate 0.1 --fault-streak 2 --retry-after 0 --slow-seconds 1.5 \
    --broken-node-lists 0.04
set +e
run NSML_ETL_CLOCK="$NOW" nsml-etl export --all --nodes --db "sqlite:///$DB" --base-url "$url" \
    --timeout 1 --backoff-initial 0.05
status=$?
set -e
echo "(exit code $status)"
echo
echo "== GPU counts read from the servers' names, into demo/gpus.toml, then loaded after a look"
# suggest only prints: what it proposes lands only through load, as a person would do it
# after reviewing the file.
show nsml-etl gpu-servers suggest --db "sqlite:///$DB"
env nsml-etl gpu-servers suggest --db "sqlite:///$DB" > demo/gpus.toml
sed 's/^/   /' demo/gpus.toml
run nsml-etl gpu-servers load demo/gpus.toml --db "sqlite:///$DB"
python - "$DB" <<'PY'
import sqlite3
import sys

from wcwidth import wcswidth  # a Korean key takes two cells a character

db = sqlite3.connect(sys.argv[1])
total, projects = db.execute(
    "SELECT COUNT(*), COUNT(DISTINCT project_id) FROM nsml_runs").fetchone()
print(f"== {total} runs from {projects} projects in nsml_runs")
for status, count in db.execute(
        "SELECT status, COUNT(*) FROM nsml_runs GROUP BY status ORDER BY 2 DESC"):
    print(f"   {count:4d}  {status}")
print("== a few rows")
for row in db.execute(
        "SELECT project_name, run_name, status, eng_full_name, envs FROM nsml_runs "
        "ORDER BY project_id, CAST(run_name AS INTEGER) LIMIT 5"):
    print("  ", " | ".join("NULL" if v is None else str(v) for v in row))
nodes, runs, multi = db.execute(
    "SELECT COUNT(*), COUNT(DISTINCT project_id || '/' || run_name), "
    "(SELECT COUNT(*) FROM (SELECT 1 FROM nsml_run_nodes GROUP BY project_id, run_name "
    "HAVING COUNT(*) > 1)) FROM nsml_run_nodes").fetchone()
print(f"== {nodes} nodes of {runs} runs in nsml_run_nodes ({multi} runs on several nodes)")
print("== failed runs and why, node by node (exit codes as the API gives them)")
for row in db.execute(
        "SELECT r.project_name, r.run_name, n.rank, n.state, n.exit_code, n.host "
        "FROM nsml_runs r JOIN nsml_run_nodes n "
        "ON n.project_id = r.project_id AND n.run_name = r.run_name "
        "WHERE r.status = 'RUN_STATE_FAILED' "
        "ORDER BY r.project_id, CAST(r.run_name AS INTEGER), n.rank LIMIT 8"):
    print("  ", " | ".join("NULL" if v is None else str(v) for v in row))
keys = db.execute("SELECT env_key, column_name FROM nsml_env_columns ORDER BY column_name")
print("== env key -> column")
for key, column in keys:
    shown = repr(key[:40])
    print(f"   {shown}{' ' * (44 - wcswidth(shown))} {column}")
PY
echo
echo "== the report's analytics sections"
REPORT=(NSML_ETL_CLOCK="$NOW" nsml-etl report --db "sqlite:///$DB" --format text
        --html demo/report.html)
show "${REPORT[@]}"
env "${REPORT[@]}" 2>/dev/null | sed -n '/^== Analytics period/,$p'
echo "(the whole report, with charts: demo/report.html; the database: $DB)"
echo
echo "== chargeback by calendar month, Seoul time: run-, GPU- and node-hours per project and creator"
# From the first of the month the simulated history starts in to the last day of this month,
# each day from 00:00 to 24:00 in Seoul (not whole UTC weeks).
read -r MONTH_FIRST MONTH_LAST < <(python - "$EPOCH" "$NOW" <<'PY'
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

seoul = [datetime.fromisoformat(t).replace(tzinfo=UTC).astimezone(ZoneInfo("Asia/Seoul")).date()
         for t in sys.argv[1:]]
first, now = seoul[0].replace(day=1), seoul[1]
after = date(now.year + now.month // 12, now.month % 12 + 1, 1)
print(first.isoformat(), (after - timedelta(days=1)).isoformat())
PY
)
run NSML_ETL_CLOCK="$NOW" nsml-etl report --db "sqlite:///$DB" --since "$MONTH_FIRST" \
    --until "$MONTH_LAST" --timezone Asia/Seoul --period month \
    --view run_hours_by_project --view run_hours_by_creator
echo
echo "The simulator has stopped: the commands above now find nobody at $url."
echo "For your own runs, leave out --base-url and NSML_ETL_CLOCK, export your NCP_ACCESS_KEY"
echo "and NCP_SECRET_KEY, and run 'nsml-etl check' first."
