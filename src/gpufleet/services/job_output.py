"""``simulate --jobs-out FILE``: one row per job and policy, as CSV or Parquet by the file's extension.

The columns are ``policy`` then those of :class:`~gpufleet.scheduler.outcomes.JobOutcomes`, in the
order documented in docs/scheduling.md. Times that never came are empty in CSV and null in Parquet.
pyarrow is imported only when a file is written, so that other commands do not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from gpufleet.errors import InputError
from gpufleet.scheduler import SimulationResult
from gpufleet.services.outputs import check_writable

FORMATS = (".csv", ".parquet")


def check_jobs_out(path: Path) -> None:
    """Refuse, before anything runs, a file whose extension names no format or that could not be written."""
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path.name}: the extension must be {' or '.join(FORMATS)}", field="jobs-out")
    check_writable(path, "jobs-out")


def write_jobs(path: Path, results: Sequence[SimulationResult]) -> int:
    """Write the per-job rows of every result to ``path``; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    check_jobs_out(path)
    tables = []
    for r in results:
        columns = {"policy": pa.repeat(r.policy, len(r.jobs))}
        columns |= {name: pa.array(values, type=pa.string() if values.dtype == object else None, from_pandas=True)
                    for name, values in r.jobs.columns().items()}  # from_pandas: NaN is null
        tables.append(pa.table(columns))
    table = pa.concat_tables(tables)
    try:
        if path.suffix.lower() == ".csv":
            pyarrow.csv.write_csv(table, path)
        else:
            pyarrow.parquet.write_table(table, path)
    except OSError as exc:
        raise InputError(f"cannot write: {exc}", field="jobs-out", location=str(path)) from None
    return table.num_rows
