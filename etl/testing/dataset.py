"""The simulator's runs: a deterministic dataset from a seed (Korean names, empty and awkward
envs, missing fields, undocumented extras) and, when time passes, each run's lifecycle
(created, waiting, running, ended or deleted upstream at moments drawn from the seed); what
the API answers for a run (its body, its summary in the run list) is built here too."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

STATUSES = (
    "RUN_STATE_COMPLETED",
    "RUN_STATE_COMPLETED",
    "RUN_STATE_IN_PROGRESS",
    "RUN_STATE_FAILED",
    "RUN_STATE_STOPPED",
    "RUN_STATE_PENDING",
)
ENGINES = (
    (101, "[Notebook] 4vCPU, 16GB Mem"),
    (205, "[GPU] V100 1EA, 8vCPU, 90GB Mem"),
    (207, "[GPU] A100 2EA, 24vCPU, 240GB Mem"),
)
IMAGES = (
    ("BASE", "nvcr.io/nvidia/tensorflow:21.02-tf1-py3"),
    ("BASE", "nvcr.io/nvidia/pytorch:23.10-py3"),
    ("CUSTOM", "registry.example.com/team/트레이너:v2"),
)
PROJECT_NAMES = ("비전 연구팀", "llm-pretrain", "음성인식 실험", "recsys")
# Env keys chosen to be awkward: case twins, dot/underscore twins, unicode, 80-char twins.
AWKWARD_KEYS = (
    "LR",
    "lr",
    "my.key",
    "my_key",
    "학습률",
    "CUDA_VISIBLE_DEVICES",
    "a" * 79 + "1",
    "a" * 79 + "2",
    "PATH",
    "EMPTY",
)
AWKWARD_VALUES = ("0.001", "", "값 with 'quotes' and \"double\"", "line1\nline2", "0,1,2,3")
# The zone of the run list's createTime/updateTime, as on NCP.
LIST_ZONE = ZoneInfo("Asia/Seoul")
LIST_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# New runs appear about this many hours apart (plus up to the jitter), as in the frozen dataset.
CREATION_GAP_H = 7
CREATION_JITTER_MIN = 300
# Creators per project on the timeline (the frozen dataset gives every run its own).
TEAM_SIZE = 3
# Share of runs canceled while still waiting, and of started runs deleted upstream mid-run.
CANCELED_IN_QUEUE = 0.08
DELETED_WHILE_RUNNING = 0.04
# Share of started runs that fail, per image of IMAGES (so failure rates differ by image); a
# further STOPPED_SHARE are stopped by their user, the rest complete.
FAILURE_BY_IMAGE = (0.10, 0.25, 0.45)
STOPPED_SHARE = 0.10
# How many nodes a run has, drawn per run: most run on one, distributed training on 2 to 4.
NODE_COUNTS = (1, 1, 1, 1, 1, 2, 2, 4)
# The exit code of a failed run's failing node (raw codes: their meaning is not documented);
# its other nodes are terminated (143) when it fails, as are all nodes of a stopped run.
FAILED_EXIT_CODES = (1, 1, 2, 137, 139)
TERMINATED_EXIT_CODE = 143
# A node's state for each run status (the node states are not documented either).
NODE_STATES = {
    "RUN_STATE_PENDING": "NODE_STATE_PENDING",
    "RUN_STATE_IN_PROGRESS": "NODE_STATE_RUNNING",
    "RUN_STATE_COMPLETED": "NODE_STATE_COMPLETED",
    "RUN_STATE_FAILED": "NODE_STATE_FAILED",
    "RUN_STATE_STOPPED": "NODE_STATE_TERMINATED",
    "RUN_STATE_CANCELED": "NODE_STATE_CANCELED",
}
# (share, shortest, longest) of queue waits and of run times, in hours.
QUEUE_WAITS = ((0.55, 0.05, 2.0), (0.30, 2.0, 10.0), (0.15, 10.0, 36.0))
RUN_TIMES = ((0.35, 0.2, 2.0), (0.45, 2.0, 16.0), (0.20, 16.0, 60.0))


def _project_id(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=19))


def generate_dataset(seed: int, projects: int, runs_per_project: int) -> dict[str, dict[str, Any]]:
    """{projectId: {"name": ..., "runs": {runName: run object}}}, the same for the same seed."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 9, 0, 0)
    data: dict[str, dict[str, Any]] = {}
    serial = 0
    for p in range(projects):
        project_id = _project_id(rng)
        name = PROJECT_NAMES[p % len(PROJECT_NAMES)] + (f" {p}" if p >= len(PROJECT_NAMES) else "")
        runs: dict[str, dict[str, Any]] = {}
        for number in range(1, runs_per_project + 1):
            serial += 1
            code, engine = rng.choice(ENGINES)
            image_type, image_path = rng.choice(IMAGES)
            created = start + timedelta(hours=serial * 7 + rng.randint(0, 5))
            run: dict[str, Any] = {
                "runName": str(number),
                "projectId": project_id,
                "projectName": name,
                "status": rng.choice(STATUSES),
                "creator": f"ncp-user-{rng.randint(1000000, 9999999)}",
                "engFullName": engine,
                "gpuSvrCode": code,
                "imageType": image_type,
                "imagePath": image_path,
                "command": f"python train.py --lr 0.{number} --name \"exp '{number}'\"\necho done",
                "note": rng.choice(("", "baseline", "재현 실험 #2", None)),
                "runType": rng.choice(("BATCH", "NOTEBOOK")),
                "_createTime": created.strftime("%Y-%m-%d %H:%M:%S"),
                "_updateTime": (created + timedelta(minutes=rng.randint(1, 600))).strftime(
                    "%Y-%m-%d %H:%M:%S"
                ),
            }
            shape = serial % 7
            if shape == 0:
                run["envs"] = {}
            elif shape == 1:
                run["envs"] = None
            elif shape == 2:
                del run["note"]
                run["envs"] = {"BATCH_SIZE": str(2 ** rng.randint(3, 8))}
            else:
                keys = rng.sample(AWKWARD_KEYS, k=rng.randint(1, 5))
                run["envs"] = {key: rng.choice(AWKWARD_VALUES) for key in keys}
            runs[str(number)] = run
        data[project_id] = {"name": name, "runs": runs}
    return data


def _hours(rng: random.Random, buckets: tuple[tuple[float, float, float], ...]) -> timedelta:
    """A duration drawn from (share, shortest, longest) buckets of hours, to the second."""
    pick, total = rng.random(), 0.0
    bucket = buckets[-1]
    for bucket in buckets:  # the bucket the pick falls in is used below
        total += bucket[0]
        if pick < total:
            break
    return timedelta(seconds=round(rng.uniform(bucket[1], bucket[2]) * 3600))


@dataclass(frozen=True)
class Lifecycle:
    """When a simulated run is created, starts, ends (naive UTC) and how; ``started`` None:
    canceled while waiting; ``deleted``: gone upstream from then on."""

    created: datetime
    started: datetime | None
    ended: datetime
    final: str
    deleted: datetime | None = None

    def status_at(self, moment: datetime) -> tuple[str, datetime] | None:
        """(status, update time) at ``moment``; None where the run does not exist (yet)."""
        if moment < self.created or (self.deleted is not None and moment >= self.deleted):
            return None
        if moment >= self.ended:
            return self.final, self.ended
        if self.started is not None and moment >= self.started:
            return "RUN_STATE_IN_PROGRESS", self.started
        return "RUN_STATE_PENDING", self.created


def add_timeline(data: dict[str, dict[str, Any]], seed: int, epoch: datetime) -> None:
    """Give every run of a :func:`generate_dataset` dataset a :class:`Lifecycle` (key
    ``_timeline``), the same for the same seed and epoch. Runs are created about
    CREATION_GAP_H apart from ``epoch`` on, the projects' runs taking turns."""
    rng = random.Random(f"nsml-simulator timeline {seed}")
    images = [path for _, path in IMAGES]
    projects = list(data.values())
    # A team per project, so that per-creator figures add up to something.
    teams = [
        [f"ncp-user-{rng.randint(1000000, 9999999)}" for _ in range(TEAM_SIZE)] for _ in projects
    ]
    for p, project in enumerate(projects):
        for k, run in enumerate(project["runs"].values()):
            run["creator"] = rng.choice(teams[p])
            turn = k * len(projects) + p
            created = epoch + timedelta(
                hours=CREATION_GAP_H * turn, minutes=rng.randint(0, CREATION_JITTER_MIN)
            )
            wait = _hours(rng, QUEUE_WAITS)
            if rng.random() < CANCELED_IN_QUEUE:
                run["_timeline"] = Lifecycle(created, None, created + wait, "RUN_STATE_CANCELED")
                continue
            started = created + wait
            duration = _hours(rng, RUN_TIMES)
            pick = rng.random()
            failure = FAILURE_BY_IMAGE[images.index(run["imagePath"]) % len(FAILURE_BY_IMAGE)]
            final = (
                "RUN_STATE_FAILED"
                if pick < failure
                else "RUN_STATE_STOPPED"
                if pick < failure + STOPPED_SHARE
                else "RUN_STATE_COMPLETED"
            )
            deleted = None
            if rng.random() < DELETED_WHILE_RUNNING:  # a long run, deleted well into it
                duration = max(duration, timedelta(hours=RUN_TIMES[-1][1]))
                deleted = started + duration * rng.uniform(0.3, 0.8)
                deleted = deleted.replace(microsecond=0)
            run["_timeline"] = Lifecycle(created, started, started + duration, final, deleted)


def generated_nodes(run: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The node list of a served run (as it is at the simulated moment), the same for the same
    seed and run: its node count, the failing node and the hosts come from a generator of its
    own, so the rest of the dataset does not change with them."""
    rng = random.Random(f"nsml-simulator nodes {seed} {run.get('projectId')} {run.get('runName')}")
    count = rng.choice(NODE_COUNTS)
    failing = rng.randrange(count)
    failed_code = rng.choice(FAILED_EXIT_CODES)
    status = run.get("status")
    nodes = []
    for rank in range(count):
        exit_code: int | None = None
        state = NODE_STATES.get(str(status), "NODE_STATE_UNKNOWN")
        if status == "RUN_STATE_COMPLETED":
            exit_code = 0
        elif status == "RUN_STATE_FAILED":
            exit_code = failed_code if rank == failing else TERMINATED_EXIT_CODE
            state = state if rank == failing else "NODE_STATE_TERMINATED"
        elif status == "RUN_STATE_STOPPED":
            exit_code = TERMINATED_EXIT_CODE
        node: dict[str, Any] = {
            "nodeId": f"{run.get('projectId')}-{run.get('runName')}-node-{rank}",
            "projectId": run.get("projectId"),
            "projectName": run.get("projectName"),
            "runName": run.get("runName"),
            "state": state,
            "resourceType": run.get("engFullName"),
            "containerImage": run.get("imagePath"),
            "rank": rank,
            "host": f"gpu-{rng.randint(1, 64):02d}.nsml.internal",
            "zone": "KR-1",  # undocumented: kept in the fields column
        }
        if exit_code is not None:
            node["exitCode"] = exit_code
        nodes.append(node)
    return nodes


def list_time(moment: datetime) -> str:
    """A naive UTC moment as the run list writes it (Seoul time, no zone)."""
    return moment.replace(tzinfo=UTC).astimezone(LIST_ZONE).strftime(LIST_TIME_FORMAT)


def public_run(run: dict[str, Any]) -> dict[str, Any]:
    """The Get run body: the dataset's bookkeeping fields (leading underscore) removed."""
    return {k: v for k, v in run.items() if not k.startswith("_")}


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "runName": run.get("runName"),
        "runType": run.get("runType"),
        "projectId": run.get("projectId"),
        "projectName": run.get("projectName"),
        "status": run.get("status"),
        "creator": run.get("creator"),
        "createTime": run.get("_createTime"),
        "updateTime": run.get("_updateTime"),
    }
