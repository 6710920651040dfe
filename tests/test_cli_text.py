"""Names read from files are shown as written in the CLI's tables: a tenant called ``[/x]`` is no Rich
markup (it ended the table output with an internal error, exit 70)."""

from __future__ import annotations

import pytest

from cli_runner import invoke

HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"


@pytest.mark.parametrize("name", [
    pytest.param("[/x]", id="closing-tag"),
    pytest.param("[bold]y", id="opening-tag"),
    pytest.param("[red]z[/red]", id="styled"),
    pytest.param("back\\[slash]", id="escaped-bracket"),
    pytest.param("trailing\\", id="trailing-backslash"),
])
def test_a_tenant_name_that_looks_like_markup_is_shown_as_written(tmp_path, name):
    trace = tmp_path / "t.csv"
    trace.write_text(f"{HEADER}2024-03-01 00:00:00,60.0,1,60.0,{name}\n2024-03-01 00:00:00,60.0,1,60.0,plain\n")
    result = invoke("simulate", trace, "--policy", "static")
    assert result.code == 0, result.stderr
    assert name in result.stdout
