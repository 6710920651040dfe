"""Reading a plan file (``gpufleet plan --out FILE``) for ``gpufleet plan apply``.

A plan file may have been edited by hand, so every field that ``apply`` reads is checked first
and a problem names the file and the field. The plan is returned as it was written: its hash,
which ties the proposals to it, is of the whole file's content, fields ``apply`` ignores included.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from gpufleet.domain.types import FIRST_DAY, LAST_DAY, MAX_GPUS, UsdPerGpuHour
from gpufleet.errors import InputError
from gpufleet.services.scenario_io import read_text

MAX_PLAN_BYTES = 64 * 1024 * 1024
MAX_PROBLEMS = 20


def _iso_date(text: str) -> str:
    """A date stays the text ``apply`` reads it from: YYYY-MM-DD, on the calendar, in the dates taken."""
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise ValueError(f"'{text}' is not a date (YYYY-MM-DD)")
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"{day} is outside the dates gpufleet takes, {FIRST_DAY} to {LAST_DAY}")
    return text


IsoDate = Annotated[str, AfterValidator(_iso_date)]
PlanGpus = Annotated[float, Field(gt=0, le=MAX_GPUS, allow_inf_nan=False)]


class _Part(BaseModel):
    # strict: a number is not read from a text, nor a text from a number; other fields are left as written
    model_config = ConfigDict(strict=True, extra="ignore")


class PlannedLoan(_Part):
    lender: str
    borrower: str
    model: str
    site: str
    gpus: PlanGpus
    start: IsoDate
    end: IsoDate
    fee_usd_per_gpu_hour: UsdPerGpuHour
    reason: str = ""


class PlannedInstall(_Part):
    owner: str
    model: str
    site: str
    gpus: PlanGpus
    date: IsoDate


class PlanFile(_Part):
    """The fields of a plan that ``plan apply`` reads."""

    policy: Annotated[str, Field(min_length=1, max_length=100)]
    start: IsoDate
    loans: list[PlannedLoan]
    installs: list[PlannedInstall]


def read_plan(path: Path) -> dict[str, Any]:
    """The plan in ``path``, checked; raises :class:`InputError` naming the file and the field."""
    text = read_text(path, MAX_PLAN_BYTES)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc.msg}", location=f"{path}:{exc.lineno}") from None
    except ValueError as exc:  # a number past Python's 4,300 digits
        raise InputError(f"not JSON: {exc}", location=str(path)) from None
    except RecursionError:
        raise InputError("nested too deeply to read", location=str(path)) from None
    return check_plan(body, str(path))


def check_plan(body: Any, where: str) -> dict[str, Any]:
    """``body`` (a plan read from ``where``: a file, a request) if it has what ``apply`` reads, as it is;
    raises :class:`InputError` naming ``where`` and the field."""
    if isinstance(body, list):
        raise InputError("a list of plans (written with --compare); apply one plan, written without --compare",
                         location=where)
    try:
        PlanFile.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_describe(where, err) for err in errors[:MAX_PROBLEMS]]
        more = f"\n... and {len(errors) - MAX_PROBLEMS} more" if len(errors) > MAX_PROBLEMS else ""
        raise InputError("\n".join(lines) + more) from None
    return body


def _describe(where: str, err: dict) -> str:
    dotted = ".".join(str(p) for p in err["loc"]) or "(file)"
    return f"{where}: field '{dotted}': {err['msg'].removeprefix('Value error, ')}"
