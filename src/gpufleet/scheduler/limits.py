"""Upper bounds on every quantity a simulation takes in, checked where it enters (docs/scheduling.md).

Each bound is far above anything a real cluster or trace has, and far below what would exhaust
memory, overflow an integer or make float arithmetic inexact:

* GPUs: the largest clusters built hold about 2 x 10^5 GPUs and Philly's largest job asks for 128.
  The engine keeps per-node arrays and milli-GPUs in int64, so 10^6 GPUs (10^9 milli-GPUs, a cluster
  of up to 10^6 nodes) costs under 200 MB and about a second to set up.
* Times: Unix times reach 10^10 s in the year 2286; a float then still resolves microseconds.
  Philly's longest job runs 4.6 x 10^6 s.
* Rows: Alibaba 2023 has 8,152 pods, Philly 82,247 jobs, Helios' largest cluster about 3.3 x 10^6.
* Text: trace fields are ids, names and numbers of at most a few dozen characters; a longer one is a
  quote left open or a file that is not a trace.
"""

from __future__ import annotations

import math

MAX_GPUS = 1_000_000           # GPUs in a job, a node, a cluster, a quota
MAX_TIME_S = 1e10              # any time or duration, s (Unix times up to 2286-11-20)
MAX_ROWS = 10_000_000          # data rows of one file
MAX_FIELD_CHARS = 1_024        # characters of one field of a CSV file
MAX_LINE_BYTES = 65_536        # bytes of one line of a CSV file
MAX_WEIGHT = 1_000_000.0       # a tenant's fair-sharing weight, which divides its share:
MIN_WEIGHT = 1 / MAX_WEIGHT    # so that no share overflows to inf, whose differences are nan
MAX_COUNT = 10**12             # counts a trace carries but the scheduler does not use (cpu_milli, memory_mib)
MAX_GPU_SECONDS = MAX_GPUS * MAX_TIME_S  # Philly's gpu_time, checked but not used
MAX_PREEMPTIONS = 1_000_000    # simulate --max-preemptions


def within(value: float, low: float, high: float) -> bool:
    """``low <= value <= high`` and finite (NaN and the infinities are never within)."""
    return math.isfinite(value) and low <= value <= high
