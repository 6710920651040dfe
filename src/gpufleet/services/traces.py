"""Reading GPU cluster traces, cluster specs and tenant quotas into the scheduler's model.

Trace readers (Philly, Alibaba 2023) return a :class:`Workload`. A row they cannot use raises
:class:`InputError` naming ``file:line``, the column and the reason; with ``skip_bad_rows`` such
rows are skipped instead and counted in ``Workload.skipped`` under a short reason. Rows that are
valid but are no GPU work (Alibaba CPU-only pods, pods never scheduled) are always skipped and counted.
Once the cluster is known, :func:`match_models` names each job's GPU models as the cluster's pools;
a row none of whose models the cluster has is refused (or skipped) the same way.

Units: GPUs in the files are whole GPUs (Alibaba ``gpu_milli``: thousandths of one GPU);
times are seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gpufleet.errors import InputError
from gpufleet.scheduler.limits import MAX_COUNT, MAX_GPU_SECONDS, MAX_GPUS, MAX_TIME_S, MAX_WEIGHT, MIN_WEIGHT
from gpufleet.scheduler.model import MILLI, Cluster, Job, NodePool, QuotaChange, Tenant, TenantQuota, Workload
from gpufleet.services import csv_lines
from gpufleet.services.scenario_io import _read_yaml

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
ALIBABA_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos",
                   "pod_phase", "creation_time", "deletion_time", "scheduled_time")
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
QOS_PRIORITY = {"Guaranteed": 3, "LS": 2, "Burstable": 1, "BE": 0}  # Alibaba qos class -> priority
NO_GPU = "no GPU requested"
NEVER_SCHEDULED = "never scheduled in the trace"
UNKNOWN_MODEL = "unknown GPU model"
_UNIX, _UNIX_UTC = datetime(1970, 1, 1), datetime(1970, 1, 1, tzinfo=UTC)
_LAST_TIME = datetime.fromtimestamp(MAX_TIME_S, UTC)


class _BadRow(Exception):
    """A row that cannot be used: ``reason`` is the short key counted when skipping bad rows."""

    def __init__(self, field: str | None, reason: str, message: str):
        super().__init__(message)
        self.field, self.reason, self.message = field, reason, message


class _Skip(Exception):
    """A valid row that is not GPU work; always skipped and counted under ``reason``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- CSV plumbing ---------------------------------------------------------------------------

def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, bytes | None]]:
    """(line, raw line) of each non-blank data row after checking the header; lines are 1-based.
    :func:`_fields` splits a raw line (``csv_lines``: one record per physical line)."""
    header = csv_lines.read_header(path)
    if tuple(header) != columns:
        raise InputError(f"expected the header '{','.join(columns)}', got {_shorten(','.join(header))!r}",
                         location=f"{path.name}:1")
    return csv_lines.data_lines(path)


def _shorten(text: str, chars: int = 200) -> str:
    return text if len(text) <= chars else f"{text[:chars]}... ({len(text):,} characters)"


def _fields(raw: bytes | None, columns: tuple[str, ...]) -> list[str]:
    """The fields of a data line, as many as ``columns``; else a bad row."""
    try:
        row = csv_lines.split(raw)
    except csv_lines.LineError as bad:
        raise _BadRow(None, bad.reason, f"the line {bad.message}") from None
    if len(row) != len(columns):
        _check_width(row, columns)
    return row


def _read_rows(path: Path, columns: tuple[str, ...], parse: Callable[[list[str], int], Any],
               skip_bad_rows: bool) -> tuple[list[Any], dict[str, int]]:
    """``parse(row, line)`` of every row, and the count of skipped rows by reason."""
    out: list[Any] = []
    skipped: dict[str, int] = {}
    for line, raw in _csv_rows(path, columns):
        try:
            out.append(parse(_fields(raw, columns), line))
        except _Skip as skip:
            skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
        except _BadRow as bad:
            if not skip_bad_rows:
                raise InputError(bad.message, field=bad.field, location=f"{path.name}:{line}") from None
            skipped[bad.reason] = skipped.get(bad.reason, 0) + 1
    return out, skipped


def _check_width(row: list[str], columns: tuple[str, ...]) -> None:
    if len(row) != len(columns):
        missing = columns[len(row)] if len(row) < len(columns) else None
        raise _BadRow(missing, "wrong number of columns",
                      f"expected {len(columns)} columns ({','.join(columns)}), got {len(row)}")


def _num(text: str, column: str, *, high: float, integer: bool = False, low: float = 0) -> Any:
    """``text`` as a finite int (``integer``) or float in [low, high]; else a bad row for ``column``.
    Every column has an upper bound (``scheduler/limits.py``, docs/scheduling.md)."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _BadRow(column, f"bad {column}", f"{column} {_shorten(text, 40)!r} is not {kind}") from None
    if not low <= value <= high:  # also rejects nan and the infinities (high is finite)
        bound = f"at least {_amount(low)}" if value < low else \
            f"at most {_amount(high)}" if value > high else "a finite number"
        raise _BadRow(column, f"bad {column}", f"{column} {_shorten(text, 40)!r} must be {bound}")
    return value


def _amount(x: float) -> str:
    return f"{int(x):,}" if x == int(x) else f"{x:,}"


def _text(text: str, column: str, reason: str) -> str:
    value = text.strip()
    if not value:
        raise _BadRow(column, reason, f"{column} is empty")
    return value


def _workload(path: Path, jobs: list[Job], skipped: dict[str, int], epoch: str | None) -> Workload:
    """The jobs (already sorted by arrival, then line) as a workload; no jobs is an error."""
    if not jobs:
        detail = f" (skipped: {skipped})" if skipped else ""
        raise InputError(f"the trace has no jobs{detail}", location=path.name)
    return Workload(jobs=tuple(jobs), epoch=epoch, skipped=skipped, source=path.name)


# --- Philly ---------------------------------------------------------------------------------

def read_philly(path: str | Path, *, skip_bad_rows: bool = False) -> Workload:
    """Microsoft Philly jobs (``timestamp,duration,num_gpus,gpu_time,cluster``); tenant = ``cluster``.

    ``arrival_s`` counts seconds from the earliest timestamp (UTC), which becomes ``epoch``;
    ``service_s`` = ``duration`` (s); job id ``philly-<line>``.
    """
    path = Path(path)
    rows, skipped = _read_rows(path, PHILLY_COLUMNS, _philly_row, skip_bad_rows)
    if not rows:
        return _workload(path, [], skipped, None)
    rows.sort()  # by time, then line
    start = rows[0][0]
    jobs = [Job(id=f"philly-{line}", tenant=tenant, arrival_s=t - start, milli_gpus=gpus * MILLI,
                service_s=duration, line=line) for t, line, tenant, gpus, duration in rows]
    return _workload(path, jobs, skipped, datetime.fromtimestamp(start, UTC).isoformat())


def _philly_row(row: list[str], line: int) -> tuple[float, int, str, int, float]:
    """(time since 1970 in s, line, tenant, GPUs, duration in s); a fast path for clean rows."""
    try:
        stamp, duration, num_gpus, gpu_time, cluster = row
        t = (datetime.fromisoformat(stamp) - _UNIX).total_seconds()  # naive times only
        seconds, gpus, work, tenant = float(duration), int(num_gpus), float(gpu_time), cluster.strip()
        if 0 <= seconds <= MAX_TIME_S and 1 <= gpus <= MAX_GPUS and 0 <= work <= MAX_GPU_SECONDS and tenant \
                and 0 <= t <= MAX_TIME_S:
            return t, line, tenant, gpus, seconds
    except (ValueError, TypeError):
        pass
    return _philly_row_checked(row, line)


def _philly_row_checked(row: list[str], line: int) -> tuple[float, int, str, int, float]:
    stamp, duration, num_gpus, gpu_time, cluster = row
    t = _timestamp(stamp)
    seconds = _num(duration, "duration", high=MAX_TIME_S)
    gpus = _num(num_gpus, "num_gpus", integer=True, low=1, high=MAX_GPUS)
    _num(gpu_time, "gpu_time", high=MAX_GPU_SECONDS)
    return t, line, _text(cluster, "cluster", "empty tenant"), gpus, seconds


def _timestamp(text: str) -> float:
    """Seconds since 1970 of an ISO time; a time without a zone is UTC. At most ``MAX_TIME_S``."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _BadRow("timestamp", "bad timestamp",
                      f"timestamp {_shorten(text, 40)!r} is not a time like 2017-10-09 07:01:55") from None
    seconds = (t - (_UNIX_UTC if t.tzinfo else _UNIX)).total_seconds()
    if not 0 <= seconds <= MAX_TIME_S:
        raise _BadRow("timestamp", "bad timestamp", f"timestamp {text.strip()!r} is not between 1970-01-01 and "
                                                    f"{_LAST_TIME:%Y-%m-%d %H:%M:%S} (UTC)")
    return seconds


# --- Alibaba 2023 ---------------------------------------------------------------------------

def read_alibaba(path: str | Path, *, skip_bad_rows: bool = False) -> Workload:
    """Alibaba GPU pods (cluster-trace-gpu-v2023 pod list); tenant = ``qos`` class.

    ``milli_gpus`` = ``num_gpu * gpu_milli``; ``arrival_s`` = ``creation_time``;
    ``service_s`` = ``deletion_time - scheduled_time`` (s). CPU-only pods and pods never
    scheduled are skipped and counted. No absolute times: ``epoch`` is None.
    """
    path = Path(path)
    seen: set[str] = set()
    jobs, skipped = _read_rows(path, ALIBABA_COLUMNS, lambda row, line: _alibaba_job(row, line, seen),
                               skip_bad_rows)
    jobs.sort(key=lambda j: (j.arrival_s, j.line))
    return _workload(path, jobs, skipped, None)


def _alibaba_job(row: list[str], line: int, seen: set[str]) -> Job:
    name, cpu, memory, num_gpu, gpu_milli, spec, qos, _phase, created, deleted, scheduled = row
    name = _unique_name(name, seen)
    _num(cpu, "cpu_milli", high=MAX_COUNT)
    _num(memory, "memory_mib", high=MAX_COUNT)
    gpus = _num(num_gpu, "num_gpu", integer=True, high=MAX_GPUS)
    if gpus == 0:
        raise _Skip(NO_GPU)
    share = _num(gpu_milli, "gpu_milli", integer=True, low=1, high=MILLI)
    priority = _qos_priority(qos)
    arrival = _num(created, "creation_time", high=MAX_TIME_S)
    if not scheduled.strip():
        raise _Skip(NEVER_SCHEDULED)
    start = _num(scheduled, "scheduled_time", high=MAX_TIME_S)
    end = _num(deleted, "deletion_time", high=MAX_TIME_S)
    if end < start:
        raise _BadRow("deletion_time", "deleted before scheduled",
                      f"deletion_time {end} is before scheduled_time {start}")
    return Job(id=name, tenant=qos.strip(), arrival_s=float(arrival), milli_gpus=gpus * share,
               service_s=float(end - start), priority=priority, models=_gpu_spec(spec), line=line)


def _gpu_spec(text: str) -> tuple[str, ...]:
    """The GPU models a pod may run on: ``gpu_spec`` split at ``|``, each once (empty: any model)."""
    if not text.strip():
        return ()
    models = tuple(dict.fromkeys(part.strip() for part in text.split("|")))  # V100M32|V100M32 occurs
    if not all(models):
        raise _BadRow("gpu_spec", "bad gpu_spec", f"gpu_spec {text!r} has an empty model name")
    return models


def _unique_name(text: str, seen: set[str]) -> str:
    name = _text(text, "name", "empty name")
    if name in seen:
        raise _BadRow("name", "duplicate name", f"pod name {name!r} appears twice")
    seen.add(name)
    return name


def _qos_priority(text: str) -> int:
    qos = _text(text, "qos", "empty tenant")
    if qos not in QOS_PRIORITY:
        raise _BadRow("qos", "bad qos", f"qos {qos!r} is not one of {', '.join(QOS_PRIORITY)}")
    return QOS_PRIORITY[qos]


# --- GPU models of a trace on a cluster -------------------------------------------------------

def pools_named(model: str, cluster: Cluster) -> tuple[str, ...]:
    """The cluster's pools a trace's GPU model means, in pool order: the pool named ``model``, and
    any named ``model-G`` where G is its GPUs per node (a node list names a model that comes in
    several node sizes so: ``T4`` is ``T4-2`` and ``T4-4``)."""
    return tuple(p.model for p in cluster.pools if p.model in (model, f"{model}-{p.gpus_per_node}"))


def match_models(workload: Workload, cluster: Cluster, *, skip_bad_rows: bool = False, hint: str = "") -> Workload:
    """``workload`` with each job's GPU models named as the cluster's pools (:func:`pools_named`).
    A model the cluster lacks is dropped from a job's alternatives; a job left with none is a bad
    row (Alibaba's ``gpu_spec``), skipped and counted with ``skip_bad_rows``; ``hint`` ends its message."""
    if not any(job.models for job in workload.jobs):
        return workload
    skipped, jobs, pools = dict(workload.skipped), [], {}
    for job in workload.jobs:
        if not job.models:
            jobs.append(job)
            continue
        if job.models not in pools:
            named = {pool for model in job.models for pool in pools_named(model, cluster)}
            pools[job.models] = tuple(m for m in cluster.models if m in named)
        if pools[job.models]:
            jobs.append(job if pools[job.models] == job.models else replace(job, models=pools[job.models]))
        elif skip_bad_rows:
            skipped[UNKNOWN_MODEL] = skipped.get(UNKNOWN_MODEL, 0) + 1
        else:
            raise InputError(f"gpu_spec {'|'.join(job.models)!r} of pod {job.id} names no GPU model of the cluster "
                             f"(it has {', '.join(cluster.models)}){hint}", field="gpu_spec",
                             location=f"{workload.source}:{job.line}" if workload.source else None)
    if not jobs:
        raise InputError(f"the trace has no jobs the cluster can run (skipped: {skipped})", location=workload.source)
    return replace(workload, jobs=tuple(jobs), skipped=skipped)


# --- Helios per-day quotas ------------------------------------------------------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def read_quota_csv(path: str | Path, *, epoch: str | None, model: str) -> list[QuotaChange]:
    """Per-day GPUs per tenant (Helios ``date,<tenant>...,total``) as quota changes on ``model``.

    ``at_s`` = seconds from ``epoch`` (ISO time, UTC if no zone; None: the first date) to each date's
    midnight UTC; dates before the epoch count as 0 and only the latest of them is kept. A change is
    emitted when a tenant's GPUs differ from its previous row (every tenant on the first row).
    """
    path = Path(path)
    tenants, rows = _quota_table(path)
    start = _epoch(epoch) if epoch is not None else _midnight(rows[0][1])
    timed = [(max(0.0, (_midnight(day) - start).total_seconds()), day, values) for _, day, values in rows]
    kept = [r for r, after in zip(timed, timed[1:] + [None]) if after is None or after[0] != r[0]]
    changes: list[QuotaChange] = []
    previous: list[float | None] = [None] * len(tenants)
    for at_s, day, values in kept:
        changes += [QuotaChange(at_s, tenant, model, value, reason=f"quota file {path.name} row {day}")
                    for tenant, value, before in zip(tenants, values, previous) if value != before]
        previous = values
    return changes


def _quota_table(path: Path) -> tuple[list[str], list[tuple[int, date, list[float]]]]:
    """Tenant columns and (line, date, GPUs per tenant) rows, dates strictly increasing."""
    header = _quota_header(path)
    rows: list[tuple[int, date, list[float]]] = []
    for line, raw in _csv_rows(path, tuple(header)):
        try:
            row = _fields(raw, tuple(header))
            day = _quota_date(row[0], rows[-1][1] if rows else None)
            rows.append((line, day, _quota_values(row, header)))
        except _BadRow as bad:
            raise InputError(bad.message, field=bad.field, location=f"{path.name}:{line}") from None
    if not rows:
        raise InputError("the quota file has no rows", location=path.name)
    return [t for t in header[1:] if t != "total"], rows


def _quota_header(path: Path) -> list[str]:
    header = csv_lines.read_header(path)
    tenants = header[1:-1] if header[-1:] == ["total"] else header[1:]
    if header[:1] != ["date"] or not tenants or not all(tenants) or len(set(tenants)) != len(tenants) \
            or "total" in tenants:
        raise InputError(f"expected the header 'date,<tenant>,...,<tenant>[,total]' with distinct tenant "
                         f"names, got {_shorten(','.join(header))!r}", location=f"{path.name}:1")
    return header


def _quota_date(text: str, before: date | None) -> date:
    if not _DATE.fullmatch(text.strip()):
        raise _BadRow("date", "bad date", f"date {text!r} is not a date like 2020-04-01")
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise _BadRow("date", "bad date", f"date {text!r} is not a calendar date") from None
    if not 0 <= (_midnight(day) - _UNIX_UTC).total_seconds() <= MAX_TIME_S:
        raise _BadRow("date", "bad date", f"date {day} is not between 1970-01-01 and {_LAST_TIME.date()}")
    if before is not None and day <= before:
        raise _BadRow("date", "bad date", f"date {day} does not come after the previous row's {before}")
    return day


def _quota_values(row: list[str], header: list[str]) -> list[float]:
    """GPUs per tenant column (ints where whole); checks the ``total`` column if there is one."""
    values = [_gpus(text, column) for text, column in zip(row[1:], header[1:])]
    if header[-1] != "total":
        return values
    *values, total = values
    if not math.isclose(total, sum(values), abs_tol=1e-6):
        raise _BadRow("total", "bad total", f"total {total} is not the sum of the tenants' GPUs, {sum(values)}")
    return values


def _gpus(text: str, column: str) -> float:
    try:
        return _num(text, column, integer=True, high=MAX_GPUS)
    except _BadRow:
        return _num(text, column, high=MAX_GPUS)


def _epoch(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{text!r} is not an ISO time like 2017-09-04T10:30:41", field="epoch") from None
    return t.replace(tzinfo=t.tzinfo or UTC)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- Cluster --------------------------------------------------------------------------------

_POOL = re.compile(r"([1-9]\d*)x([1-9]\d*)(?::([A-Za-z0-9._-]+))?")


def read_cluster(spec: str | Path) -> Cluster:
    """A cluster from ``NODESxGPUS[:MODEL],...`` (e.g. ``16x8:A100,4x8:H100``; model "gpu" if
    omitted) or from an Alibaba node-list CSV (``sn,cpu_milli,memory_mib,gpu,model``); at most
    ``MAX_GPUS`` GPUs in all."""
    text = str(spec).strip()
    parts = [part.strip() for part in text.split(",")]
    matches = [_POOL.fullmatch(part) for part in parts]
    if all(matches):
        return _cluster([_pool(m) for m in matches])  # type: ignore[arg-type]
    if text.lower().endswith(".csv") or _is_file(text):
        return _cluster_from_nodes(Path(text))
    bad = next(part for part, m in zip(parts, matches) if not m)
    raise InputError(f"bad part {_shorten(bad, 40)!r} in {_shorten(text, 80)!r}: expected NODESxGPUS[:MODEL] "
                     f"(like 60x8:V100), comma-separated, or a node-list CSV file", field="cluster")


def _pool(m: re.Match) -> NodePool:
    """A pool of the spec; digits are counted before they are read, so no size is too large to refuse."""
    nodes, gpus = m[1], m[2]
    if len(nodes) + len(gpus) > 2 * len(str(MAX_GPUS)) or int(nodes) * int(gpus) > MAX_GPUS:
        raise InputError(f"{_shorten(m[0], 40)!r}: {_shorten(nodes, 20)} nodes of {_shorten(gpus, 20)} GPUs are over "
                         f"the most a cluster may have, {MAX_GPUS:,} GPUs", field="cluster")
    return NodePool(m[3] or "gpu", int(nodes), int(gpus))


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte, is no file
        return False


def _cluster(pools: list[NodePool]) -> Cluster:
    models = [p.model for p in pools]
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise InputError(f"GPU model {', '.join(repeated)} is listed more than once", field="cluster")
    return Cluster(pools=tuple(pools))


def _cluster_from_nodes(path: Path) -> Cluster:
    """One pool per (model, GPUs per node), in order of first appearance; GPU-less nodes ignored."""
    nodes, _ = _read_rows(path, NODE_COLUMNS, _node_row, skip_bad_rows=False)
    counts: dict[tuple[str, int], int] = {}
    for key in nodes:
        counts[key] = counts.get(key, 0) + 1
    sizes: dict[str, int] = {}
    for model, _gpu in counts:
        sizes[model] = sizes.get(model, 0) + 1
    pools = [NodePool(model if sizes[model] == 1 else f"{model}-{gpu}", n, gpu)
             for (model, gpu), n in counts.items()]
    if not pools:
        raise InputError("the node list has no node with a GPU", location=path.name)
    return _cluster(pools)


def _node_row(row: list[str], line: int) -> tuple[str, int]:
    _text(row[0], "sn", "empty sn")
    _num(row[1], "cpu_milli", high=MAX_COUNT)
    _num(row[2], "memory_mib", high=MAX_COUNT)
    gpu = _num(row[3], "gpu", integer=True, high=MAX_GPUS)
    if gpu == 0:
        raise _Skip(NO_GPU)
    return _text(row[4], "model", "empty model"), gpu


# --- Quotas ---------------------------------------------------------------------------------

TOP_KEYS = {"cohort", "tenants", "changes"}
TENANT_KEYS = {"name", "nominal", "borrowing_limit", "lending_limit", "weight", "cohort"}
CHANGE_KEYS = {"at_s", "tenant", "nominal", "model"}


def read_quotas(path: str | Path, cluster: Cluster, *,
                epoch: str | None = None) -> tuple[list[Tenant], list[QuotaChange]]:
    """Tenants and dated nominal-quota changes from a quotas YAML file, or a Helios per-day CSV.

    Amounts are GPUs; a bare number means the cluster's first GPU model. Limits absent = no limit.
    ``epoch`` (ISO time) is used only for the CSV form, to place its dates.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _quotas_from_csv(path, cluster, epoch)
    data, lines = _read_yaml(path)
    return _QuotaFile(path, lines, cluster).read(data)


def _quotas_from_csv(path: Path, cluster: Cluster, epoch: str | None) -> tuple[list[Tenant], list[QuotaChange]]:
    model = cluster.models[0]
    changes = read_quota_csv(path, epoch=epoch, model=model)
    first: dict[str, float] = {}
    for change in changes:
        first.setdefault(change.tenant, change.nominal_gpus)
    return [Tenant(name, {model: TenantQuota(gpus)}) for name, gpus in first.items()], changes


class _QuotaFile:
    """Validation of a parsed quotas YAML file; errors name ``file:line`` and a field path."""

    def __init__(self, path: Path, lines: dict[tuple, int], cluster: Cluster):
        self.path, self.lines, self.cluster = path, lines, cluster

    def read(self, data: Any) -> tuple[list[Tenant], list[QuotaChange]]:
        top = self.mapping(data, (), TOP_KEYS, required={"tenants"})
        cohort = self.name(top.get("cohort", "default"), ("cohort",))
        items = self.sequence(top["tenants"], ("tenants",), nonempty=True)
        tenants = [self.tenant(item, ("tenants", i), cohort) for i, item in enumerate(items)]
        names = self.distinct([t.name for t in tenants])
        changes = [self.change(item, ("changes", i), names)
                   for i, item in enumerate(self.sequence(top.get("changes", []), ("changes",)))]
        return tenants, sorted(changes, key=lambda c: c.at_s)

    def error(self, at: tuple, message: str) -> InputError:
        found: tuple = ()
        for part in at:
            if found + (part,) in self.lines:
                found += (part,)
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".")
        return InputError(message, field=field or None, location=f"{self.path.name}:{self.lines.get(found, 1)}")

    def mapping(self, value: Any, at: tuple, keys: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.error(at, f"expected a mapping with keys {', '.join(sorted(keys))}")
        for key in value:
            if key not in keys:
                raise self.error(at + (key,), f"unknown key; expected one of {', '.join(sorted(keys))}")
        missing = sorted(required - set(value))
        if missing:
            raise self.error(at + (missing[0],), "is required")
        return value

    def sequence(self, value: Any, at: tuple, nonempty: bool = False) -> list:
        if not isinstance(value, list) or (nonempty and not value):
            raise self.error(at, "expected a list" + (" of at least one item" if nonempty else ""))
        return value

    def name(self, value: Any, at: tuple) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a numeric-looking id such as 103959
        if not isinstance(value, str) or not value.strip():
            raise self.error(at, f"expected a name, got {value!r} (quote it)")
        return value.strip()

    def number(self, value: Any, at: tuple, *, positive: bool = False, high: float = MAX_GPUS,
               low: float = 0.0) -> float:
        """A finite number in [low, high] (> 0 if ``positive``); GPUs unless ``high`` says otherwise."""
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise self.error(at, f"expected a number, got {_shorten(repr(value), 40)}")
        if value < 0 or (positive and value == 0):
            raise self.error(at, f"must be {'> 0' if positive else '>= 0'}, got {_shorten(str(value), 40)}")
        if value > high:  # before any int becomes a float: 10**400 would overflow
            raise self.error(at, f"must be at most {_amount(high)}, got {_shorten(str(value), 40)}")
        if value < low:
            raise self.error(at, f"must be at least {low:g}, got {value}")
        return value

    def model(self, value: Any, at: tuple) -> str:
        if value not in self.cluster.models:
            raise self.error(at, f"unknown GPU model {value!r}; the cluster has {', '.join(self.cluster.models)}")
        return value

    def per_model(self, value: Any, at: tuple, models: tuple[str, ...]) -> dict[str, float]:
        """A number (on the first of ``models``) or a mapping {model: number}; models from ``models``."""
        if not isinstance(value, dict):
            return {models[0]: self.number(value, at)}
        out = {}
        for model, gpus in value.items():
            if model not in models:
                raise self.error(at + (model,), f"unknown GPU model {model!r}; expected one of {', '.join(models)}")
            out[model] = self.number(gpus, at + (model,))
        return out

    def limit(self, value: Any, at: tuple, models: tuple[str, ...]) -> dict[str, float]:
        """Absent: no limit; a number: the same limit on every model; a mapping: per model."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return self.per_model(value, at, models)
        gpus = self.number(value, at)
        return {model: gpus for model in models}

    def tenant(self, item: Any, at: tuple, cohort: str) -> Tenant:
        m = self.mapping(item, at, TENANT_KEYS, required={"name", "nominal"})
        nominal = self.per_model(m["nominal"], at + ("nominal",), self.cluster.models)
        models = tuple(nominal)
        borrow = self.limit(m.get("borrowing_limit"), at + ("borrowing_limit",), models)
        lend = self.limit(m.get("lending_limit"), at + ("lending_limit",), models)
        try:
            quotas = {k: TenantQuota(nominal[k], borrow.get(k), lend.get(k)) for k in models}
        except InputError as exc:
            raise self.error(at + (exc.field,), exc.message) from None
        return Tenant(self.name(m["name"], at + ("name",)), quotas,
                      cohort=self.name(m.get("cohort", cohort), at + ("cohort",)),
                      weight=self.number(m.get("weight", 1), at + ("weight",), positive=True, high=MAX_WEIGHT,
                                         low=MIN_WEIGHT))

    def distinct(self, names: list[str]) -> set[str]:
        for i, name in enumerate(names):
            if name in names[:i]:
                raise self.error(("tenants", i, "name"), f"tenant {name!r} is listed twice")
        return set(names)

    def change(self, item: Any, at: tuple, names: set[str]) -> QuotaChange:
        m = self.mapping(item, at, CHANGE_KEYS, required={"at_s", "tenant", "nominal"})
        tenant = self.name(m["tenant"], at + ("tenant",))
        if tenant not in names:
            raise self.error(at + ("tenant",), f"unknown tenant {tenant!r}; tenants: {', '.join(sorted(names))}")
        return QuotaChange(at_s=self.number(m["at_s"], at + ("at_s",), high=MAX_TIME_S), tenant=tenant,
                           model=self.model(m.get("model", self.cluster.models[0]), at + ("model",)),
                           nominal_gpus=self.number(m["nominal"], at + ("nominal",)),
                           reason=f"quota file {self.path.name} {at[0]}[{at[1]}]")
