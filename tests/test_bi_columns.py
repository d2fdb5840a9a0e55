"""What a BI tool reads from the views' columns: Superset takes a dataset's first time column as
its time axis, and reads a column's type from the database."""

from __future__ import annotations

import json

import sqlalchemy as sa


def columns(db_url: str, view: str) -> list[tuple[str, object]]:
    engine = sa.create_engine(db_url)
    try:
        return [(c["name"], c["type"]) for c in sa.inspect(engine).get_columns(view)]
    finally:
        engine.dispose()


def is_time(column: tuple[str, object]) -> bool:
    name, kind = column
    if isinstance(kind, sa.types.NullType):  # SQLite's views have no types: the names say
        return name.endswith(("_at", "_earliest", "_latest")) or name == "last_seen"
    return isinstance(kind, sa.DateTime | sa.Date)


def test_the_timeline_is_charted_by_creation(run_cli, db_url, tmp_path):
    """Regression: gone_at came first, so Superset charted runs by when they were deleted."""
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"projectId": "p", "runName": "1", "gpuSvrCode": 205}) + "\n")
    assert run_cli("load", str(path), "--db", db_url).exit_code == 0
    timeline = columns(db_url, "nsml_run_timeline")
    assert [name for name, _ in timeline if is_time((name, _))][0] == "created_at"
    names = [name for name, _ in timeline]
    assert names.index("created_at") < names.index("gone_at")
    hours = dict(columns(db_url, "nsml_run_hours_per_week"))
    if not isinstance(hours["gpu_hours"], sa.types.NullType):  # typed: a number, even if NULL
        assert isinstance(hours["gpu_hours"], sa.Numeric | sa.Float | sa.Integer)
