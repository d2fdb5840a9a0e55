"""The hand-written baseline `make bench` compares `nsml-etl load` against.

Flatten with plain Python, then one DataFrame and `to_sql(chunksize=10000)` into a fresh table:
no upsert, no schema evolution, no mapping table, everything held in memory. On DuckDB, whose
SQLAlchemy driver makes `to_sql` one INSERT per row (100k rows took over 10 minutes), the
DataFrame goes in by DuckDB's own bulk path instead (`CREATE TABLE ... AS SELECT` from the
registered frame): the baseline is what a hand-written DuckDB load would do.
"""

import json
import sys

import pandas as pd
import sqlalchemy as sa


def flatten(run: dict) -> dict:
    row = {key: value for key, value in run.items() if key != "envs"}
    row["envs"] = json.dumps(run.get("envs"), ensure_ascii=False)
    for key, value in (run.get("envs") or {}).items():
        row["env_" + key.lower()] = value
    return row


def main(path: str, url: str) -> None:
    with open(path, "rb") as handle:
        records = [flatten(json.loads(line)) for line in handle]
    frame = pd.DataFrame(records)
    if url.startswith("duckdb:"):
        import duckdb

        with duckdb.connect(url.split(":///", 1)[1]) as con:
            con.register("frame", frame)
            con.execute("CREATE OR REPLACE TABLE baseline_runs AS SELECT * FROM frame")
        return
    engine = sa.create_engine(url)
    frame.to_sql("baseline_runs", engine, chunksize=10000, index=False, if_exists="replace")
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
