#!/usr/bin/env bash
# A real export against the bundled simulator into ./nsml_runs.db, then a look at it: first
# two weeks and more of simulated time (runs created, waiting, running, finishing, one or two
# deleted upstream) exported every 6 simulated hours, so the report has a real history, queue
# waits and run-hours; then one export with injected faults, the way cron would run it.
# Scratch files (the simulator's address and clock) go to ./demo/.
set -euo pipefail

mkdir -p demo
# Demo keys: the simulator accepts exactly these; real keys never belong in a script.
export NCP_ACCESS_KEY=AKDEMO0000000000000 NCP_SECRET_KEY=demo-secret-not-a-real-key
rm -f demo/address.txt nsml_runs.db
SIM=(--seed 7 --projects 3 --runs 25)
# The simulated timeline starts on the Monday two weeks before this one and ends now, so the
# report's default period (the last 8 weeks) covers it.
read -r EPOCH NOW < <(python - <<'PY'
from datetime import UTC, datetime, timedelta
now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
monday = (now - timedelta(days=now.weekday())).replace(hour=0)
print((monday - timedelta(weeks=2)).isoformat(), now.isoformat())
PY
)

start_simulator() {  # start_simulator ARGS...: serve in the background until the next call
    rm -f demo/address.txt
    nsml-etl simulate --port 0 "${SIM[@]}" --epoch "$EPOCH" --address-file demo/address.txt "$@" &
    sim=$!
    for _ in $(seq 100); do [ -s demo/address.txt ] && break; sleep 0.1; done
    [ -s demo/address.txt ] || { echo "simulator did not start" >&2; exit 1; }
}
trap 'kill ${sim:-} 2>/dev/null || true' EXIT

echo "== simulated time: $EPOCH to $NOW (UTC), an export every 6 hours"
echo "$EPOCH" > demo/clock.txt
start_simulator --clock-file demo/clock.txt
# Some 80 exports, in one Python process to spare each its start-up; each one is exactly
# 'nsml-etl export --all ...' at the simulated moment (NSML_ETL_CLOCK), which the simulator
# serves too (its clock file).
python - "$EPOCH" "$NOW" "$(cat demo/address.txt)" <<'PY'
import contextlib
import io
import os
import sys
from datetime import datetime, timedelta

from nsml_etl.cli import main

epoch, now = datetime.fromisoformat(sys.argv[1]), datetime.fromisoformat(sys.argv[2])
moment = epoch + timedelta(hours=6)
while moment < now:
    with open("demo/clock.tmp", "w") as handle:
        handle.write(moment.isoformat())
    os.replace("demo/clock.tmp", "demo/clock.txt")
    os.environ["NSML_ETL_CLOCK"] = moment.isoformat()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
        main(["export", "--all", "--db", "sqlite:///nsml_runs.db", "--base-url", sys.argv[3],
              "--quiet"], standalone_mode=False)
    lines = output.getvalue().splitlines()
    gone = [line.split("\t")[:2] for line in lines if "HTTP 404" in line]
    if moment.hour == 0 or gone:  # one line a day, and each run found deleted upstream
        note = "".join(f"; run {' '.join(g).strip()} deleted upstream" for g in gone)
        print(f"   {moment:%a %d %b %H:%M}  {lines[-1].removeprefix('Summary: ')}{note}")
    moment += timedelta(hours=6)
PY
kill $sim; wait $sim 2>/dev/null || true

echo
echo "== now, with faults: nsml-etl export --all --db sqlite:///nsml_runs.db"
start_simulator --clock "$NOW" --fault-rate 0.1 --fault-streak 2 --retry-after 0 --slow-seconds 1.5
set +e
NSML_ETL_CLOCK="$NOW" nsml-etl export --all --db sqlite:///nsml_runs.db \
    --base-url "$(cat demo/address.txt)" --timeout 1 --backoff-initial 0.05
status=$?
set -e
echo "(exit code $status)"
echo
# GPU counts are never guessed: the notebook server (101) stays unknown on purpose.
nsml-etl gpu-servers set 205 1 --label "V100 x1"
nsml-etl gpu-servers set 207 2 --label "A100 x2"
python - <<'PY'
import sqlite3

db = sqlite3.connect("nsml_runs.db")
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
keys = db.execute("SELECT env_key, column_name FROM nsml_env_columns ORDER BY column_name")
print("== env key -> column")
for key, column in keys:
    print(f"   {key[:40]!r:44} {column}")
PY
echo
echo "== nsml-etl report --format text --html demo/report.html (analytics sections)"
NSML_ETL_CLOCK="$NOW" nsml-etl report --db sqlite:///nsml_runs.db --format text \
    --html demo/report.html 2>/dev/null | sed -n '/^== Analytics period/,$p'
echo "(the whole report, with charts: demo/report.html)"
