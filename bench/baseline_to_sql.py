"""The hand-written baseline `make bench` compares `nsml-etl load` against.

Flatten with plain Python, then one DataFrame and `to_sql(chunksize=10000)` into a fresh table:
no upsert, no schema evolution, no mapping table, everything held in memory.
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
    engine = sa.create_engine(url)
    pd.DataFrame(records).to_sql(
        "baseline_runs", engine, chunksize=10000, index=False, if_exists="replace"
    )
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
