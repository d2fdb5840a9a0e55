#!/usr/bin/env bash
# A real export against the bundled simulator into ./nsml_runs.db, then a look at it.
# Scratch files (pairs, the simulator's address) go to ./demo/.
set -euo pipefail

mkdir -p demo
# Demo keys: the simulator accepts exactly these; real keys never belong in a script.
export NCP_ACCESS_KEY=AKDEMO0000000000000 NCP_SECRET_KEY=demo-secret-not-a-real-key
rm -f demo/address.txt

nsml-etl simulate --port 0 --seed 7 --projects 3 --runs 25 --fault-rate 0.1 --fault-streak 2 \
    --retry-after 0 --slow-seconds 1.5 --address-file demo/address.txt --write-pairs demo/pairs.csv &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s demo/address.txt ] && break; sleep 0.1; done
[ -s demo/address.txt ] || { echo "simulator did not start" >&2; exit 1; }

echo "== nsml-etl export --pairs demo/pairs.csv --db sqlite:///nsml_runs.db"
set +e
nsml-etl export --pairs demo/pairs.csv --db sqlite:///nsml_runs.db --base-url "$(cat demo/address.txt)" \
    --timeout 1 --backoff-initial 0.05
status=$?
set -e
echo "(exit code $status)"
echo
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
