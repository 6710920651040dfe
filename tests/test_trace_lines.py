"""One CSV record per physical line (services.csv_lines): a line that is no record is a bad row naming
``file:line``, skipped and counted with ``skip_bad_rows``, and never takes the lines after it along."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.errors import InputError
from gpufleet.scheduler.limits import MAX_FIELD_CHARS, MAX_LINE_BYTES
from gpufleet.services import csv_lines
from gpufleet.services.traces import read_alibaba, read_cluster, read_philly, read_quota_csv

PHILLY_HEADER = b"timestamp,duration,num_gpus,gpu_time,cluster"
GOOD = b"2017-10-09 07:00:00,1,1,1,a"

BAD_LINES = [  # (the bad line 3, skip reason, words of the message)
    pytest.param(b'2017-10-09 07:01:55,66.0,1,66.0,"a', "unbalanced quote", "opens a quote", id="quote-left-open"),
    pytest.param(b'2017-10-09 07:01:55,66.0,1,"66"x,a', "unbalanced quote", "after a closing quote",
                 id="text-after-closing-quote"),
    pytest.param(b"2017-10-09 07:01:55,66.0,1,66.0,a\x00b", "NUL byte", "NUL byte at character 34", id="nul-byte"),
    pytest.param(b"2017-10-09 07:01:55,66.0,1,66.0,\xff\xfe", "not UTF-8", "not UTF-8", id="not-utf8"),
    pytest.param(b"2017-10-09 07:01:55,66.0\r,1,66.0,a", "carriage return", "carriage return", id="bare-cr"),
    pytest.param(b"2017-10-09 07:01:55,66.0,1,66.0," + b"a" * (MAX_FIELD_CHARS + 1), "field too long",
                 "the 5th", id="field-too-long"),
    pytest.param(b"2017-10-09 07:01:55,66.0,1,66.0,a" + b" " * MAX_LINE_BYTES, "line too long", "65,536 bytes",
                 id="line-too-long"),
]


def philly_bytes(tmp_path: Path, *lines: bytes) -> Path:
    path = tmp_path / "p.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(("bad", "reason", "words"), BAD_LINES)
def test_a_line_that_is_no_record_is_refused_with_its_line(tmp_path, bad, reason, words):
    with pytest.raises(InputError, match=words) as exc:
        read_philly(philly_bytes(tmp_path, PHILLY_HEADER, GOOD, bad, b"2017-10-09 08:00:00,1,1,1,b"))
    assert exc.value.location == "p.csv:3"


@pytest.mark.parametrize(("bad", "reason", "words"), BAD_LINES)
def test_skip_bad_rows_skips_only_that_line(tmp_path, bad, reason, words):
    w = read_philly(philly_bytes(tmp_path, PHILLY_HEADER, GOOD, bad, b"2017-10-09 08:00:00,1,1,1,b"),
                    skip_bad_rows=True)
    assert [j.id for j in w.jobs] == ["philly-2", "philly-4"]
    assert w.skipped == {reason: 1}


def test_a_quote_left_open_no_longer_swallows_the_rest_of_the_trace(tmp_path):
    """The report: 300 rows, a quote opened on row 6, read as 5 jobs with exit 0."""
    rows = [f"2024-03-01 00:{i % 60:02d}:00,60.0,1,60.0,t{i % 3}".encode() for i in range(300)]
    rows[5] = rows[5].replace(b",t", b',"t')
    path = philly_bytes(tmp_path, PHILLY_HEADER, *rows)
    with pytest.raises(InputError, match="opens a quote") as exc:
        read_philly(path)
    assert exc.value.location == "p.csv:7"
    w = read_philly(path, skip_bad_rows=True)
    assert len(w.jobs) == 299 and w.skipped == {"unbalanced quote": 1}


@pytest.mark.parametrize(("lines", "tenants"), [
    pytest.param([b'2017-10-09 07:00:00,"1",1,1,"a,b"'], ["a,b"], id="quoted-fields"),
    pytest.param([b'2017-10-09 07:00:00,1,1,1,"say ""hi"""'], ['say "hi"'], id="doubled-quote"),
    pytest.param([GOOD + b"\r"], ["a"], id="crlf"),
])
def test_well_formed_quoting_and_line_ends_still_read(tmp_path, lines, tenants):
    assert [j.tenant for j in read_philly(philly_bytes(tmp_path, PHILLY_HEADER + b"\r", *lines)).jobs] == tenants


def test_a_file_of_more_rows_than_the_bound_is_refused_at_the_first_too_many(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_lines, "MAX_ROWS", 2)  # the bound is 10^7: a file that large is slow to write
    path = philly_bytes(tmp_path, PHILLY_HEADER, GOOD, b"", GOOD, GOOD)
    with pytest.raises(InputError, match="more than 2 rows") as exc:
        read_philly(path, skip_bad_rows=True)
    assert exc.value.location == "p.csv:5"


def test_a_byte_order_mark_before_the_header_is_ignored(tmp_path):
    assert len(read_philly(philly_bytes(tmp_path, b"\xef\xbb\xbf" + PHILLY_HEADER, GOOD)).jobs) == 1


@pytest.mark.parametrize("header", [
    pytest.param(PHILLY_HEADER + b"\x00", id="nul"),
    pytest.param(b'"' + PHILLY_HEADER, id="quote-left-open"),
    pytest.param(b"\xff" + PHILLY_HEADER, id="not-utf8"),
])
def test_a_header_that_is_no_record_names_line_1(tmp_path, header):
    with pytest.raises(InputError) as exc:
        read_philly(philly_bytes(tmp_path, header, GOOD))
    assert exc.value.location == "p.csv:1"


@pytest.mark.parametrize(("reader", "name", "header", "bad"), [
    pytest.param(read_alibaba, "pods.csv", b"name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
                 b"creation_time,deletion_time,scheduled_time", b'p1,1,1,1,1000,"T4,LS,Running,0,10,0',
                 id="alibaba"),
    pytest.param(read_cluster, "nodes.csv", b"sn,cpu_milli,memory_mib,gpu,model", b'n1,1,1,8,"V100',
                 id="node-list"),
    pytest.param(lambda p: read_quota_csv(p, epoch=None, model="gpu"), "q.csv", b"date,a,b",
                 b'2020-04-01,1,"2', id="helios-quotas"),
])
def test_every_csv_reader_reads_one_record_per_line(tmp_path, reader, name, header, bad):
    path = tmp_path / name
    path.write_bytes(header + b"\n" + bad + b"\n" + b'closing",quote\n')
    with pytest.raises(InputError, match="opens a quote") as exc:
        reader(path)
    assert exc.value.location == f"{name}:2"
