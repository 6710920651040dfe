"""A fuzz of trace files, in the suite: small valid Philly and Alibaba traces, mutated (truncated,
quotes, huge numbers, NUL bytes, wrong columns, random bytes, lines dropped, doubled or broken),
read by the service and by the real CLI entry point in this process. Each case must either parse
or be refused with the project's :class:`InputError` naming the file (and the line, unless the file
as a whole has no jobs); never another exception, never exit 70, never ``NaN`` or ``Infinity`` in
the JSON output.

The examples are seeded (the suite's hypothesis profile derandomizes them); the count below is the
CI's, and ``GPUFLEET_FUZZ_EXAMPLES=N`` runs N cases of each campaign for a long run
(``--hypothesis-show-statistics`` shows how many parsed and how many were refused).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cli_runner import DOCUMENTED_EXITS, invoke
from gpufleet.errors import InputError
from gpufleet.services import scheduling

EXAMPLES = int(os.environ.get("GPUFLEET_FUZZ_EXAMPLES", "0")) or 300
PHILLY = b"""\
timestamp,duration,num_gpus,gpu_time,cluster
2017-10-09 07:01:55,66.0,1,66.0,11cb48
2017-10-09 06:13:03,2951.0,2,5902.0,6214e9
2017-10-09 06:20:00,600,8,4800,11cb48
2017-10-09 08:00:00,12.5,4,50.0,6214e9
2017-10-09 09:30:00+02:00,3600,1,3600,b436b2
"""
ALIBABA = b"""\
name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
openb-pod-0000,12000,16384,1,1000,,LS,Running,0,12537,0
openb-pod-0001,6000,12288,1,460,,LS,Running,4270,12902,4270
openb-pod-0002,4000,8192,2,1000,,Burstable,Succeeded,100,900,120
openb-pod-0003,8000,30720,0,0,,BE,Running,50,600,60
openb-pod-0004,32000,65536,8,1000,,Guaranteed,Running,200,5000,300
openb-pod-0005,1000,2048,1,250,,BE,Pending,300,,
"""
BASES = {"philly": PHILLY, "alibaba": ALIBABA}
NASTY = [b"1000000000000", b"1" + b"0" * 30, b"9223372036854775808", b"-1", b"-0", b"0", b"1e308", b"1e400",
         b"inf", b"-inf", b"nan", b"NaN", b"1" * 400, b"0x10", b"1_000", b" 7 ", b"", b"\"\"", b"\"1\"",
         b"9999-12-31 23:59:59", b"0001-01-01 00:00:00", b"2017-02-30 00:00:00", b"\xff\xfe", b"\x00",
         b"a" * 2000, b"1e10", b"10000000001", b"1000001", b"1000000", b"[/x]", b"[bold]", b":smile:", b"\\"]
OPS = ["truncate", "quote", "nasty", "nul", "drop-field", "extra-field", "random-bytes", "drop-line",
       "duplicate-line", "swap-lines", "blank-line", "crlf", "bare-cr", "header", "bom"]


@st.composite
def traces(draw) -> tuple[str, bytes]:
    """A trace format and a file of that format, with one to four mutations."""
    fmt = draw(st.sampled_from(sorted(BASES)))
    data = BASES[fmt]
    for _ in range(draw(st.integers(1, 4))):
        data = _mutate(draw, draw(st.sampled_from(OPS)), data)
    return fmt, data


def _mutate(draw, op: str, data: bytes) -> bytes:
    lines = data.split(b"\n")
    i = draw(st.integers(0, max(len(lines) - 1, 0)))
    at = draw(st.integers(0, len(data)))
    if op == "truncate":
        return data[:at]
    if op in ("quote", "nul", "random-bytes", "bare-cr"):
        insert = {"quote": b'"', "nul": b"\x00", "bare-cr": b"\r"}.get(op) or draw(st.binary(min_size=1, max_size=16))
        return data[:at] + insert + data[at:]
    if op in ("nasty", "drop-field", "extra-field", "header"):
        j = 0 if op == "header" else i
        fields = lines[j].split(b",")
        k = draw(st.integers(0, len(fields) - 1))
        if op == "drop-field":
            del fields[k]
        elif op == "extra-field":
            fields.insert(k, draw(st.sampled_from(NASTY)))
        else:
            fields[k] = draw(st.sampled_from(NASTY + [b"name", b"timestamp", b"num_gpus"]))
        lines[j] = b",".join(fields)
    elif op == "drop-line":
        del lines[i]
    elif op == "duplicate-line":
        lines.insert(i, lines[i])
    elif op == "swap-lines":
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "blank-line":
        lines.insert(i, draw(st.sampled_from([b"", b" ", b","])))
    elif op == "crlf":
        return b"\r\n".join(lines)
    elif op == "bom":
        return b"\xef\xbb\xbf" + data
    return b"\n".join(lines)


def check_refusal(exc: InputError, path: Path, data: bytes) -> None:
    """The refusal names the file, and a line of it unless the file as a whole has no jobs."""
    found = re.fullmatch(rf"{re.escape(path.name)}(?::(\d+))?", exc.location or "")
    assert found, f"the refusal names no file: {exc}"
    if found[1] is None:
        assert "no jobs" in exc.message, f"a refusal without a line: {exc}"
    else:
        assert 1 <= int(found[1]) <= data.count(b"\n") + 1, f"line {found[1]} is past the end: {exc}"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=traces(), skip_bad_rows=st.booleans())
def test_a_mutated_trace_parses_or_is_refused_naming_file_and_line(case, skip_bad_rows):
    fmt, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"trace.{fmt}.csv"
        path.write_bytes(data)
        try:
            workload = scheduling.read_workload(path, fmt, skip_bad_rows=skip_bad_rows)
        except InputError as exc:
            event("refused")
            check_refusal(exc, path, data)
            return
        event("parsed")
        assert workload.jobs and all(0 <= j.arrival_s <= 1e10 and 0 < j.milli_gpus <= 10**9 for j in workload.jobs)
        assert len(workload.jobs) + sum(workload.skipped.values()) <= data.count(b"\n") + 1


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=traces(), skip_bad_rows=st.booleans(), output=st.sampled_from(["json", "table"]))
def test_a_mutated_trace_through_the_command_line(case, skip_bad_rows, output):
    """The whole path: reading, sizing a cluster, a replay, the output, the mapping of errors."""
    fmt, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"trace.{fmt}.csv"
        path.write_bytes(data)
        result = invoke("simulate", path, "--trace-format", fmt, "--policy", "static", "--format", output,
                        *(["--skip-bad-rows"] if skip_bad_rows else []))
    detail = f"exit {result.code}\nstdout: {result.stdout[-1000:]}\nstderr: {result.stderr[-1000:]}"
    assert result.code in DOCUMENTED_EXITS and "internal error" not in result.stderr, detail
    assert "Traceback" not in result.stdout + result.stderr, detail
    if result.code == 0:
        event("simulated")
        if output == "json":
            json.loads(result.stdout, parse_constant=lambda name: (_ for _ in ()).throw(AssertionError(name)))
    else:
        event(f"refused, exit {result.code}")
        assert result.code == 3 and result.stdout == "", detail
        assert re.match(rf"error: {re.escape(path.name)}(:\d+)?: ", result.stderr), detail
