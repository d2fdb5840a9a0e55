"""Shared types that every layer passes around: a run's pair and a run for an export to fetch.

A leaf: it imports nothing of nsml-etl, so that any module may use these types (the errors
module included) without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


class Pair(NamedTuple):
    project_id: str
    run_name: str

    def __str__(self) -> str:
        return f"{self.project_id}/{self.run_name}"


@dataclass(frozen=True, slots=True)
class RunToFetch:
    """A run for an export to fetch: its pair, and what the run list showed of it (Get run has
    no times). A run named by a pairs file, or stored and no longer listed, has only its pair."""

    pair: Pair
    status: str | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class FlatNode:
    """One node of a run's node list, flattened for ``nsml_run_nodes``: the documented fields
    as columns, every other field of the node in ``fields`` (JSON text)."""

    node_id: str
    state: str | None
    resource_type: str | None
    container_image: str | None
    rank: int | None
    exit_code: int | None
    host: str | None
    fields: str | None
