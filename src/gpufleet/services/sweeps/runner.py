"""Run a sweep's samples in batches: serially, on a local process pool, or on a Dask cluster.

A sweep is ``samples`` independent calls ``sample(context, seed, i)`` for ``i`` in ``0..samples-1``:

* **inputs once**: the sweep's inputs go to each worker once (process pool: the initializer;
  Dask: ``client.scatter(..., broadcast=True)``); each worker process prepares its context from them
  once (for a supply sweep: builds the LP and passes it to HiGHS) and keeps it for every batch;
* **batches**: a task runs a batch of consecutive indices, so that scheduling costs little against
  the work (:func:`batch_size`);
* **determinism**: sample ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))`` and nothing else,
  so its row is the same serially, on N processes or on any Dask cluster, in any order, and when a
  killed worker's batch runs again elsewhere;
* **stored as they arrive, resumable**: each finished batch is written to the results folder
  (:class:`Store`) before the next is awaited; a rerun with the same inputs and seed runs only the
  indices the folder lacks;
* **several sweeps, one submission** (:func:`run_all`; a supply sweep from today and from each claim's
  date): every sweep's batches go to the same pool or cluster, in order, so that workers go on to the
  next sweep's batches while the last of the previous one finish; each sweep's inputs still go to each
  worker once and its rows to its own folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

import gpufleet
from gpufleet.errors import InputError

# kind -> "module:prepare,sample": prepare(inputs) -> context; sample(context, seed, index) -> dict
KINDS = {"supply": "gpufleet.services.sweeps.supply:prepare,sample",
         "quotas": "gpufleet.services.sweeps.quotas:prepare,sample"}
MAX_SAMPLES = 10_000_000
TASKS_PER_WORKER = 4  # default batches per worker: enough to balance, few enough to keep overhead small
MAX_BATCH = 256
META = ("sample", "seed", "inputs_hash", "code_version")


@dataclass(frozen=True)
class Sweep:
    """A sweep to run: ``kind`` names its sample function; ``inputs`` are picklable."""

    kind: str
    inputs: Any
    inputs_hash: str
    seed: int
    samples: int
    about: dict | None = field(default=None, compare=False)  # JSON for sweep.json: what rereading needs

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown sweep kind '{self.kind}'", field="kind")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InputError(f"must be from 1 to {MAX_SAMPLES:,}, got {self.samples}", field="samples")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"must be from 0 to 2**63 - 1, got {self.seed}", field="seed")


@dataclass
class SweepRun:
    rows: list[dict]  # every sample's row, by index (stored ones too)
    ran: int  # samples computed by this run (the rest were in the store)
    batches: int
    wall_s: float
    where: str


class SweepInterrupted(Exception):
    """Raised by :func:`run` when told to stop after some batches (tests; what a Ctrl-C leaves)."""


# -- hashing and versions ---------------------------------------------------------------------------------


def digest(obj: Any) -> str:
    """A SHA-256 of ``obj``'s content, the same in every process (no pickle: sets and hash seeds vary)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, np.ndarray):
        h.update(f"nd{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes() if obj.dtype != object else repr(obj.tolist()).encode())
    elif hasattr(obj, "model_dump"):
        _feed(h, obj.model_dump(mode="json"))
    elif is_dataclass(obj) and not isinstance(obj, type):
        h.update(type(obj).__name__.encode())
        for f in fields(obj):
            _feed(h, f.name)
            _feed(h, getattr(obj, f.name))
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for x in obj:
            _feed(h, x)
        h.update(b"]")
    elif isinstance(obj, (set, frozenset)):
        _feed(h, sorted(obj, key=repr))
    elif isinstance(obj, (date, datetime, str, int, float, bool, type(None), np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} for a sweep's inputs")


_VERSION: list[str] = []


def code_version() -> str:
    """``gpufleet.__version__``, plus ``git describe`` of the source tree where there is one."""
    if not _VERSION:
        here = Path(gpufleet.__file__).resolve().parent
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here, capture_output=True,
                                 text=True, timeout=5, check=False)
            tail = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            tail = ""
        _VERSION.append(f"{gpufleet.__version__}+{tail}" if tail else gpufleet.__version__)
    return _VERSION[0]


# -- workers ----------------------------------------------------------------------------------------------

_LOCAL = threading.local()  # per thread: {(kind, inputs_hash): context}; HiGHS objects are not shared
# Contexts a worker thread keeps, the least recently used freed first: batches come sweep after sweep,
# so one would do, but a retried batch (a Dask worker lost) may go back to the previous sweep.
CONTEXTS_KEPT = 2


def _functions(kind: str) -> tuple[Callable, Callable]:
    module, names = KINDS[kind].split(":")
    prepare, sample = names.split(",")
    mod = import_module(module)
    return getattr(mod, prepare), getattr(mod, sample)


def _context(kind: str, inputs_hash: str, inputs: Any) -> Any:
    cache = getattr(_LOCAL, "contexts", None)
    if cache is None:
        cache = _LOCAL.contexts = {}
    key = (kind, inputs_hash)
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
    else:
        while len(cache) >= CONTEXTS_KEPT:
            del cache[next(iter(cache))]  # free the least recently used sweep's models first
        cache[key] = _functions(kind)[0](inputs)
    return cache[key]


def run_batch(kind: str, inputs: Any, inputs_hash: str, seed: int, indices: list[int], version: str) -> list[dict]:
    """The rows of one batch; ``inputs`` come once per worker (scattered) and are prepared once."""
    context = _context(kind, inputs_hash, inputs)
    sample = _functions(kind)[1]
    return [{"sample": i, "seed": seed, "inputs_hash": inputs_hash, "code_version": version}
            | sample(context, seed, i) for i in indices]


_POOL_INPUTS: dict[str, Any] = {}


def _pool_init(inputs: dict[str, Any]) -> None:
    """Each sweep's inputs by hash, once per worker process."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _POOL_INPUTS.update(inputs)


def _pool_batch(kind: str, inputs_hash: str, seed: int, indices: list[int], version: str) -> list[dict]:
    return run_batch(kind, _POOL_INPUTS[inputs_hash], inputs_hash, seed, indices, version)


# -- the results folder -----------------------------------------------------------------------------------


class Store:
    """A results folder (``*.parquet``): ``sweep.json`` (kind, inputs hash, seed, samples, code version)
    and one Parquet file per batch, one row per sample, written whole then renamed (a stop leaves
    no half file). Read it with ``pyarrow.parquet.read_table(folder)`` or pandas."""

    def __init__(self, path: Path, sweep: Sweep):
        self.path, self.sweep = Path(path), sweep

    def open(self) -> set[int]:
        """Create the folder, or check it holds this sweep's rows; the indices already stored."""
        manifest = self.path / "sweep.json"
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} is a file; a sweep's results are a folder", field="out")
        if manifest.exists():
            old = json.loads(manifest.read_text())
            for key in ("kind", "inputs_hash", "seed"):
                if old.get(key) != getattr(self.sweep, key):
                    raise InputError(f"{self.path} holds another sweep's rows ({key} {old.get(key)!r}, this sweep's "
                                     f"{getattr(self.sweep, key)!r}); give another --out or remove it", field="out")
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise InputError(f"{self.path} is a folder that is not a sweep's results", field="out")
            try:
                self.path.mkdir(parents=False, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create {self.path}: {exc.strerror or exc}", field="out") from None
            manifest.write_text(json.dumps({"kind": self.sweep.kind, "inputs_hash": self.sweep.inputs_hash,
                                            "seed": self.sweep.seed, "samples": self.sweep.samples,
                                            "code_version": code_version()}
                                           | ({"about": self.sweep.about} if self.sweep.about else {}),
                                           indent=1) + "\n")
        return {r["sample"] for r in self.read(columns=["sample"])}

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        first, last = rows[0]["sample"], rows[-1]["sample"]
        final = self.path / f"part-{first:09d}-{last:09d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, final)

    def read(self, columns: list[str] | None = None) -> list[dict]:
        """The stored rows, by sample index (the first copy of an index stored twice)."""
        import pyarrow.parquet as pq

        rows: dict[int, dict] = {}
        for part in sorted(self.path.glob("part-*.parquet")):
            for row in pq.read_table(part, columns=columns).to_pylist():
                rows.setdefault(row["sample"], row)
        return [rows[i] for i in sorted(rows) if i < self.sweep.samples]


def read_folder(path: Path, field: str = "sweep") -> tuple[dict, list[dict]]:
    """A results folder's ``sweep.json`` and its rows by sample index, without the sweep that wrote it;
    an error names the folder and what is wrong with it."""
    import pyarrow.parquet as pq

    path = Path(path)
    manifest = path / "sweep.json"
    if not manifest.is_file():
        raise InputError(f"{path} is not a sweep's results folder (it has no sweep.json)", field=field)
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        rows: dict[int, dict] = {}
        for part in sorted(path.glob("part-*.parquet")):
            for row in pq.read_table(part).to_pylist():
                rows.setdefault(row["sample"], row)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the sweep in {path}: {exc}", field=field) from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise InputError(f"{path}/sweep.json names no known sweep kind", field=field)
    return meta, [rows[i] for i in sorted(rows) if i < meta.get("samples", len(rows))]


# -- running -----------------------------------------------------------------------------------------------


def batch_size(todo: int, workers: int, requested: int | None = None) -> int:
    """Samples per task: as asked, else ``todo / (4 x workers)`` rounded up, at most 256."""
    if requested is not None:
        if requested < 1:
            raise InputError(f"must be at least 1, got {requested}", field="batch_size")
        return requested
    return max(1, min(MAX_BATCH, math.ceil(todo / (TASKS_PER_WORKER * max(1, workers)))))


def batches_of(indices: list[int], size: int) -> list[list[int]]:
    return [indices[k:k + size] for k in range(0, len(indices), size)]


def parse_dask(spec: str) -> tuple[str, int | str]:
    """``local:N`` (a LocalCluster of N worker processes) or ``tcp://HOST:PORT`` (an existing scheduler)."""
    if spec.startswith("local:"):
        try:
            n = int(spec[6:])
        except ValueError:
            n = 0
        if not 1 <= n <= 1024:
            raise InputError(f"local:N needs N from 1 to 1024, got {spec!r}", field="dask")
        return "local", n
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return "address", spec
    raise InputError(f"give local:N or tcp://HOST:PORT, not {spec!r}", field="dask")


def run(sweep: Sweep, *, store: Store | None = None, workers: int = 1, dask: str | Any | None = None,
        batch: int | None = None, progress: Callable[[int, int], None] | None = None,
        stop_after_batches: int | None = None) -> SweepRun:
    """Run the samples the store lacks; return every row by index.

    ``workers``: 1 runs in this process, N > 1 on N local processes; ``dask``: ``local:N``,
    ``tcp://HOST:PORT`` or a ``distributed.Client``. ``progress(done, total)`` after each batch.
    """
    return run_all([sweep], stores=[store], workers=workers, dask=dask, batch=batch, progress=progress,
                   stop_after_batches=stop_after_batches)[0]


Task = tuple[int, list[int]]  # (the sweep's position in run_all's list, its sample indices)


def run_all(sweeps: Sequence[Sweep], *, stores: Sequence[Store | None] | None = None, workers: int = 1,
            dask: str | Any | None = None, batch: int | None = None,
            progress: Callable[[int, int], None] | None = None,
            stop_after_batches: int | None = None) -> list[SweepRun]:
    """Run several sweeps' missing samples as one submission to one executor; each sweep's :class:`SweepRun`.

    Batches are sized over all the samples to run (:func:`batch_size`), cut per sweep (a batch holds
    one sweep's indices) and submitted in order, sweep by sweep. A sweep's rows are those :func:`run`
    gives it alone (a sample depends on its sweep's inputs, seed and index only); ``stores[k]`` holds
    sweep k's rows; ``progress(done, total)`` counts every sweep's samples; ``wall_s`` is the whole
    submission's. ``stop_after_batches`` counts batches of any sweep (tests: an interruption).
    """
    started = time.perf_counter()
    stores = list(stores) if stores is not None else [None] * len(sweeps)
    if len(stores) != len(sweeps):
        raise ValueError(f"{len(sweeps)} sweeps but {len(stores)} stores")
    done = [store.open() if store is not None else set() for store in stores]
    todo = [[i for i in range(sweep.samples) if i not in have] for sweep, have in zip(sweeps, done)]
    fresh: list[list[dict]] = [[] for _ in sweeps]
    total, count = sum(sweep.samples for sweep in sweeps), 0

    def plan(n_workers: int) -> list[Task]:
        size = batch_size(sum(map(len, todo)), n_workers, batch)
        return [(k, chunk) for k, indices in enumerate(todo) for chunk in batches_of(indices, size)]

    def arrived(k: int, rows: list[dict]) -> None:
        nonlocal count
        if stores[k] is not None:
            stores[k].write(rows)
        fresh[k].extend(rows)
        count += 1
        if progress is not None:
            progress(sum(map(len, done)) + sum(map(len, fresh)), total)
        if stop_after_batches is not None and count >= stop_after_batches:
            raise SweepInterrupted(f"stopped after {count} batches")

    if progress is not None:
        progress(sum(map(len, done)), total)
    tasks = plan(workers) if dask is None else []
    if dask is not None:
        where, tasks = _run_dask(sweeps, plan, dask, arrived)
    elif workers > 1 and len(tasks) > 1:
        where = _run_pool(sweeps, tasks, workers, arrived)
    else:
        where = "serial"
        for k, chunk in tasks:
            sweep = sweeps[k]
            arrived(k, run_batch(sweep.kind, sweep.inputs, sweep.inputs_hash, sweep.seed, chunk, code_version()))
    wall = time.perf_counter() - started
    return [SweepRun(store.read() if store is not None else sorted(rows, key=lambda r: r["sample"]), len(rows),
                     sum(1 for j, _ in tasks if j == k), wall, where)
            for k, (store, rows) in enumerate(zip(stores, fresh))]


def _by_hash(sweeps: Sequence[Sweep]) -> dict[str, Any]:
    return {sweep.inputs_hash: sweep.inputs for sweep in sweeps}


def _run_pool(sweeps: Sequence[Sweep], tasks: list[Task], workers: int,
              arrived: Callable[[int, list[dict]], None]) -> str:
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    version = code_version()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_pool_init,
                             initargs=(_by_hash(sweeps),)) as pool:
        futures = {pool.submit(_pool_batch, sweeps[k].kind, sweeps[k].inputs_hash, sweeps[k].seed, chunk,
                               version): k for k, chunk in tasks}
        try:
            for future in as_completed(futures):
                arrived(futures[future], future.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return f"{workers} local processes"


def _run_dask(sweeps: Sequence[Sweep], plan: Callable[[int], list[Task]], dask: str | Any,
              arrived: Callable[[int, list[dict]], None]) -> tuple[str, list[Task]]:
    """Batches sized by the cluster's workers (a 100-worker cluster gets ~4 tasks each, not 2 workers' worth);
    each sweep's inputs scattered to every worker once."""
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    own: list = []
    if isinstance(dask, str):
        how, value = parse_dask(dask)
        if how == "local":
            cluster = LocalCluster(n_workers=int(value), threads_per_worker=1, processes=True, dashboard_address=None)
            own.append(cluster)
            client = Client(cluster)
        else:
            try:
                client = Client(str(value), timeout="10s")
            except OSError as exc:
                raise InputError(f"no Dask scheduler at {value}: {exc}", field="dask") from None
        own.insert(0, client)
        where = f"Dask {dask}"
    else:
        client, where = dask, f"Dask {dask.scheduler.address if dask.scheduler else 'client'}"
    try:
        tasks = plan(len(client.scheduler_info()["workers"]))
        scattered = {h: client.scatter(inputs, broadcast=True, hash=False) for h, inputs in _by_hash(sweeps).items()}
        version = code_version()
        futures = {client.submit(run_batch, sweeps[k].kind, scattered[sweeps[k].inputs_hash], sweeps[k].inputs_hash,
                                 sweeps[k].seed, chunk, version, pure=False, retries=2): k for k, chunk in tasks}
        try:
            for future in dask_completed(list(futures)):
                arrived(futures[future], future.result())
        finally:
            client.cancel(list(futures))
    finally:
        for thing in own:
            thing.close()
    return where, tasks


def summary_rows(rows: Iterable[dict]) -> list[dict]:
    """Rows without the metadata columns (what the determinism tests compare)."""
    return [{k: v for k, v in r.items() if k not in ("inputs_hash", "code_version")} for r in rows]
