"""Commands of ``gpufleet``: thin shells over :class:`FleetService`."""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, date, datetime
from enum import StrEnum
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

from gpufleet.cli import client, render
from gpufleet.cli.options import number
from gpufleet.cli.render import Format, console
from gpufleet.domain.types import MAX_SEQ
from gpufleet.ledger.db import DEFAULT_DB
from gpufleet.planner.problem import MAX_COST_USD, MAX_FEE_USD_PER_GPU_HOUR, MAX_HORIZON_WEEKS, MAX_LEAD_WEEKS
from gpufleet.services.demo import run_demo
from gpufleet.services.fleet import FleetService, make_payload, parse_anchor, parse_date
from gpufleet.services.outputs import check_writable, write_text

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="gpufleet: the system of record and planner for a GPU fleet shared by several entities.")
ledger_app = typer.Typer(no_args_is_help=True, help="Check the ledger's hash chain.")
loan_app = typer.Typer(no_args_is_help=True, help="Open, reclaim or close a loan of installed GPUs.")
schema_app = typer.Typer(no_args_is_help=True, help="Print JSON Schemas of the file formats.")
approvals_app = typer.Typer(no_args_is_help=True, help="Related-party transactions awaiting or given approval.")
app.add_typer(approvals_app, name="approvals")
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="approval policy YAML (default: sourced defaults)")]
app.add_typer(ledger_app, name="ledger")
app.add_typer(loan_app, name="loan")
app.add_typer(schema_app, name="schema")

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv")]
OnOpt = Annotated[str | None, typer.Option("--on", help="effective date YYYY-MM-DD (default: today)")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="who records it (default: your user name)")]
KeyOpt = Annotated[str | None, typer.Option("--idempotency-key", help="a retried write with the same key is applied once")]


class Settings:
    db: str = DEFAULT_DB
    remote: client.Remote | None = None  # client mode: the server the everyday commands talk to
    command: str = ""


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[str, typer.Option("--db", envvar="GPUFLEET_DB",
                                    help="database URL or SQLite file path")] = DEFAULT_DB,
    server: Annotated[str | None, typer.Option("--server", envvar="GPUFLEET_URL", help="a gpufleet server's URL: "
                                               "the everyday commands become its client")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="GPUFLEET_TOKEN", help="the server's API token "
                                              "(prefer $GPUFLEET_TOKEN or `gpufleet login`: `ps` shows "
                                              "arguments)")] = None,
) -> None:
    Settings.db = db
    command = Settings.command = ctx.invoked_subcommand or ""
    Settings.remote = client.resolve(server, token, ctx.get_parameter_source("db"),
                                     ctx.get_parameter_source("server"), quiet=command in ("login", "logout"))
    if Settings.remote is not None and command in client.LOCAL_ONLY and "--help" not in sys.argv:
        raise client.local_only(command, Settings.remote)


def _fleet(create: bool = False) -> FleetService:
    if Settings.remote is not None:  # a command that reads the ledger and is not offered over HTTP
        raise client.local_only(Settings.command, Settings.remote)
    return FleetService.open(Settings.db, create=create)


def _no_remote(option: str, given: object, why: str) -> None:
    """In client mode, refuse a local-only option that was given."""
    if Settings.remote is not None and given not in (None, False, [], ()):
        raise client.refuse_option(option, why)


ACTOR_IS_PRINCIPAL = "the actor is the principal the token authenticates"
POLICY_IS_SERVERS = "the server applies its own approval policy"


# -- set-up and loading ----------------------------------------------------------------


@app.command()
def init() -> None:
    """Create the ledger (or migrate it to the newest schema)."""
    _fleet(create=True)
    console.print(f"ledger ready at {Settings.db}")


@app.command()
def load(file: Path, actor: ActorOpt = None) -> None:
    """Validate a scenario file and append it to the ledger in one transaction (all or nothing)."""
    from gpufleet.services.fleet import load_scenario

    if Settings.remote is not None:
        from gpufleet.services.scenario_io import read_scenario

        _no_remote("--actor", actor, ACTOR_IS_PRINCIPAL)
        read_scenario(file)  # a bad file is refused here, naming it, before it is sent
        result = SimpleNamespace(**Settings.remote.load(file))
    else:
        result = load_scenario(Settings.db, file, actor)
    console.print(f"loaded {result.events} events from {file} (seq {result.first_seq}..{result.last_seq}); "
                  f"head {result.head_hash[:16]}")


@app.command()
def status(
    as_of: Annotated[str | None, typer.Option(help="effective date YYYY-MM-DD (default: latest)")] = None,
    known_at: Annotated[str | None, typer.Option(help="as recorded by this date or date-time (default: now)")] = None,
    entity: Annotated[str | None, typer.Option(help="only this entity")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The fleet on a date, as the ledger knew it at a time."""
    source = Settings.remote or _fleet()
    report = source.status(parse_date(as_of, "as_of"), known_at, entity)
    if fmt is Format.json:
        render.print_json(report)
    elif fmt is Format.csv:
        render.print_csv(report["holdings"])
    else:
        _print_status(report)


def _print_status(report: dict) -> None:
    known = f", as known at {report['known_at']}" if report["known_at"] else ""
    console.print(f"[bold]Fleet as of {report['as_of']}{known}[/] (ledger seq {report['ledger_seq']})")
    console.print(render.table("Holdings (GPUs)", report["holdings"]))
    for section, title in [("sites", "Sites"), ("loans", "Loans"), ("transfers", "Transfers between entities"),
                           ("claims", "Claims against the record")]:
        if report[section]:
            console.print(render.table(title, report[section]))


@app.command()
def events(
    since: Annotated[int, typer.Option(min=0, max=MAX_SEQ, help="after this sequence number")] = 0,
    until: Annotated[int | None, typer.Option(min=0, max=MAX_SEQ, help="up to this sequence number")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="only these event types")] = None,
    limit: Annotated[int | None, typer.Option(min=0, max=MAX_SEQ, help="at most this many")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """List ledger events in sequence order."""
    if Settings.remote is not None:
        rows = Settings.remote.events(since, until, type_ or (), limit)
    else:
        rows = [asdict(e) | {"effective_date": e.effective_date.isoformat(), "payload": json.loads(e.payload)}
                for e in _fleet().events(since, until, type_ or (), limit)]
    if fmt is Format.json:
        render.print_json(rows)
    elif fmt is Format.csv:
        render.print_csv([r | {"payload": json.dumps(r["payload"], sort_keys=True)} for r in rows])
    else:
        shown = [r | {"payload": json.dumps(r["payload"], sort_keys=True)[:80], "hash": r["hash"][:12]} for r in rows]
        console.print(render.table("Events", shown, ["seq", "recorded_at", "effective_date", "actor", "event_type",
                                                     "payload", "hash"]))


@app.command()
def demo(
    demo_db: Annotated[Path | None, typer.Option("--demo-db", help="where to write the demo ledger and its "
                                                 "board report (default: a temporary directory, removed at "
                                                 "the end)")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Load the bundled 2024 H100 story into a fresh SQLite ledger and show what it records.

    Without ``--demo-db`` the ledger and the board report live in a temporary directory that is
    removed when the command ends; give ``--demo-db FILE`` to keep both and explore them.
    """
    if demo_db is not None:
        _demo(demo_db, fmt, kept=True)
        return
    with tempfile.TemporaryDirectory(prefix="gpufleet-demo-") as folder:
        _demo(Path(folder) / "demo.db", fmt, kept=False)


def _demo(path: Path, fmt: Format, kept: bool) -> None:
    from gpufleet.reports.board import write_report

    report = run_demo(str(path))
    service = FleetService.open(str(path))
    try:
        report["report"] = str(write_report(service, path.with_name("report.html"), end=date(2024, 12, 31)))
    finally:
        service.engine.dispose()
    if not kept:
        report["database"] = report["report"] = report["disclosure"]["bundle"] = None
    if fmt is Format.json:
        render.print_json(report)
        return
    console.print(f"[bold]The 2024 H100 redirection[/]: {report['events']} events from {report['scenario']}")
    for day in report["dates"]:
        console.rule(f"as of {day['as_of']}, as recorded by then")
        console.print(render.table("GPUs per entity", day["holdings"], ["entity", *_DEMO_COLUMNS],
                                   ["entity", "owned", "active", "idle in warehouse", "lent", "borrowed",
                                    "on order", "in transit"]))
        if day["transfers"]:
            console.print(render.table("Transfers between entities", day["transfers"],
                                       ["kind", "id", "on", "from_entity", "to_entity", "gpus",
                                        "hardware_value_usd", "consideration"]))
        if day["claims"]:
            console.print(render.table("Claims against the record", day["claims"],
                                       ["claim", "metric", "target", "deadline", "actual", "gap", "status"]))
    _print_policies(report["policies_2023_12_01"])
    forecast = report["forecast_2024_04_23_for_2024_12_31"]
    console.rule("what the ledger said on 2024-04-23 about 2024-12-31")
    console.print(render.table("Tesla, as known on 2024-04-23", forecast["holdings"],
                               ["entity", "active", "in_warehouse", "on_order", "due_by_as_of"],
                               ["entity", "active", "in warehouse", "on order", "due by 2024-12-31"]))
    for claim in forecast["claims"]:
        if claim["metric"] == "active_gpus":
            row = forecast["holdings"][0]
            supported = row["active"] + row["in_warehouse"] + row["due_by_as_of"]
            console.print(f"On 2024-04-23 the record supported at most {supported:,} H100 for Tesla by "
                          f"{claim['deadline']} (active + in warehouse + lots due), against {claim['target']:,.0f} "
                          f"claimed ({claim['claim']}).")
    _print_governance(report["governance"])
    _print_disclosure(report["disclosure"], path.parent if kept else None)
    verified = "verifies" if report["verified"] else "DOES NOT VERIFY"
    console.print(f"ledger {verified}; head {report['head_hash']}")
    if kept:
        console.print(f"board report: {report['report']}\n"
                      f"explore it: gpufleet --db {path} status --as-of 2024-06-04 --known-at 2024-06-04")
    else:
        console.print("(the demo ledger was temporary: `gpufleet demo --demo-db demo.db` keeps it and the board "
                      "report)")


def _print_policies(comparison: dict) -> None:
    console.rule(f"policies compared from {comparison['start']} to {comparison['end']} (planner, HiGHS)")
    rows = [{
        "policy": r["policy"], "idle_gpu_weeks": r["idle_gpu_weeks"], "tesla_delay_weeks": r["tesla_delay_weeks"],
        **{f"value_{e}_musd": v / 1e6 for e, v in r["value_usd"].items()},
        "related_party_hardware_musd": r["related_party_hardware_usd"] / 1e6,
        "related_party_fees_musd": r["related_party_fees_usd"] / 1e6,
        "tesla_active_2024_12_31": f"{r['tesla_active_2024_12_31']:,} / {comparison['claim_gpus']:,}",
    } for r in comparison["policies"]]
    console.print(render.table("hold: no swap, no loans; what happened: the swap as recorded; "
                               "owner-first: Tesla lends only its surplus, with reclaims", rows))
    for r in comparison["policies"]:
        for loan in r["loans"]:
            console.print(f"{r['policy']}: loan of {loan['gpus']:,.0f} {loan['model']} from {loan['lender']} to "
                          f"{loan['borrower']} at {loan['site']}, {loan['start']} to {loan['end']}. {loan['reason']}")
        for rec in r["reclaims"]:
            console.print(f"{r['policy']}: {rec['lender']} reclaims {rec['gpus']:,.0f} from {rec['borrower']} on "
                          f"{rec['date']} (work lost: USD {rec['cost_usd']:,.0f})")
    console.print(f"Assumed costs: {comparison['options']}; recorded: Tesla had "
                  f"{comparison['tesla_active_2024_12_31_recorded']:,} H100 active on {comparison['end']}.")


def _print_disclosure(found: dict, folder: Path | None) -> None:
    """The checkpoints, the related-party bundle verified offline, and the rewrite the first checkpoint catches."""
    console.rule("verifiable disclosure: signed checkpoints, a bundle, a rewrite caught")
    first, last = found["checkpoints"]
    console.print(f"Checkpoints signed with a demo key ({found['key'].split('+')[0]}, made for this run; the "
                  f"demo replays history, so the {first['as_of']} checkpoint is signed now over the tree as "
                  f"it was then): size {first['tree_size']} on {first['as_of']} (root {first['root_hash'][:16]}...), "
                  f"size {last['tree_size']} on {last['as_of']} (root {last['root_hash'][:16]}...).",
                  markup=False, highlight=False)
    ok = found["verified"]
    seqs = ", ".join(f"{e['seq']} ({e['type']})" for e in ok["events"])
    console.print(f"Related-party disclosure bundle: events {seqs} proven against the {last['as_of']} checkpoint; "
                  f"consistent with the {first['as_of']} one; verify-bundle accepts it (offline, no database).",
                  markup=False, highlight=False)
    t = found["tamper"]
    console.print(f"Tampering: event {t['seq']} (the swap) rewritten in a copy, chain, head and Merkle tree rebuilt: "
                  f"`ledger verify` {'passes' if t['chain_verifies'] else 'fails'} on the chain alone, but the "
                  f"consistency proof against the {first['as_of']} checkpoint fails "
                  f"({t['consistency_with_first_checkpoint']}), and the disclosed event {t['seq']} is no longer "
                  f"in the tree ({t['original_event_included']}).", markup=False, highlight=False)
    if folder is not None:
        console.print(f"check it: gpufleet verify-bundle {folder / 'disclosure.json'} --key '{found['key']}' "
                      f"--previous {folder / 'checkpoint-2023.note'}", markup=False, highlight=False)


def _print_governance(gov: dict) -> None:
    console.rule("governance: related parties, approvals, claims")
    for swap in gov["swaps"]:
        console.print(f"Swap {swap['swap']}: {swap['giver']} gave {swap['receiver']} GPUs worth "
                      f"USD {swap['value_usd']:,.0f}; related parties ({swap['related_basis']}); approval: "
                      f"{swap['approval'].replace('_', ' ')}. Delivery delay imposed on {swap['giver']}: "
                      f"{swap['delay_gpu_weeks']:,} GPU-weeks, USD {swap['delay_usd']:,.0f} at market rates.")
    console.print(render.table("Claims against the record and against what was known when they were made",
                               gov["claims"], ["claim", "metric", "target", "stated_on", "supported_when_stated",
                                               "achievable_when_stated", "actual", "status"]))
    console.print(render.table("Findings (gpufleet audit)", gov["findings"],
                               ["severity", "kind", "title", "evidence_seqs"]))


_DEMO_COLUMNS = ["owned", "active", "in_warehouse", "lent", "borrowed", "on_order", "in_transit"]


Method = StrEnum("Method", {name: name for name in ("choose", "simplex", "ipm", "pdlp")})  # planner.solver.METHODS
MAX_TIME_LIMIT_S = 1e6  # planner.solver.MAX_TIME_LIMIT_S (not imported here: it imports HiGHS)
plan_app = typer.Typer(help="Propose the best use of every GPU (HiGHS); `plan apply` records a plan's proposals.")
app.add_typer(plan_app, name="plan")


@plan_app.callback(invoke_without_command=True)
def plan_cmd(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(help="plan from this date (default: the ledger's latest)")] = None,
    horizon: Annotated[int, typer.Option(help="weeks to plan", min=1, max=MAX_HORIZON_WEEKS)] = 52,
    policy: Annotated[str, typer.Option(help="owner-first, max-value, fair or hold")] = "owner-first",
    compare: Annotated[bool, typer.Option(help="run every policy side by side")] = False,
    integral: Annotated[bool, typer.Option(help="lend whole servers (MILP)")] = False,
    scenario: Annotated[Path | None, typer.Option(help="plan a scenario file instead of the ledger")] = None,
    lead_weeks: Annotated[int, typer.Option(help="install lead time (burn-in), weeks", min=0,
                                                   max=MAX_LEAD_WEEKS)] = 2,
    move_cost: Annotated[float, typer.Option(parser=number(0, MAX_COST_USD),
                                             help="USD per GPU moved between sites")] = 2000.0,
    reclaim_cost: Annotated[float, typer.Option(parser=number(0, MAX_COST_USD),
                                                help="USD per lent GPU taken back (work lost)")] = 500.0,
    fee: Annotated[float | None, typer.Option(
        parser=number(0, MAX_FEE_USD_PER_GPU_HOUR), help="loan fee, USD per GPU-hour (default: the market "
                                                         "reference of the approval policy on the start date)")] = None,
    failure_rate: Annotated[float, typer.Option(parser=number(0, 1, below=True),
                                                help="expected failures per GPU-week")] = 0.0,
    method: Annotated[Method, typer.Option(help="HiGHS method")] = Method.choose,
    time_limit: Annotated[float, typer.Option(parser=number(0, MAX_TIME_LIMIT_S, above=True),
                                              help="seconds")] = 600.0,
    out: Annotated[Path | None, typer.Option(help="also write the JSON plan here")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Propose the best use of every GPU over the horizon (HiGHS), and say what it costs whom."""
    if ctx.invoked_subcommand:
        return
    from gpufleet.planner.problem import PlanOptions
    from gpufleet.planner.solver import SolveOptions
    from gpufleet.services import planning

    if out:
        check_writable(out, "out")
    start = parse_date(as_of, "as_of")
    if Settings.remote is not None and scenario is None:  # a scenario file is planned here: no ledger
        _no_remote("--method", method is not Method.choose, "the server chooses HiGHS's method")
        body = Settings.remote.plan({
            "as_of": start and start.isoformat(), "horizon_weeks": horizon, "policy": policy, "compare": compare,
            "integral": integral, "lead_weeks": lead_weeks, "move_cost_usd": move_cost,
            "reclaim_cost_usd": reclaim_cost, "fee_usd_per_gpu_hour": fee, "failure_rate_per_gpu_week": failure_rate,
            "time_limit_s": time_limit})
        plans = body if compare else [body]
    else:
        solver = SolveOptions(method=method.value, time_limit_s=time_limit)
        state = planning.scenario_state(scenario, start) if scenario else _fleet().state(start)
        if fee is None:  # an arm's-length fee, so that the proposals pass the price check
            from gpufleet.domain.governance import GovernancePolicy

            fee = GovernancePolicy().market_price(start or state.as_of or datetime.now(UTC).date()).usd_per_gpu_hour
        options = PlanOptions(horizon_weeks=horizon, install_lead_weeks=lead_weeks, move_cost_usd=move_cost,
                              reclaim_cost_usd=reclaim_cost, loan_fee_usd_per_gpu_hour=fee,
                              failure_rate_per_gpu_week=failure_rate, integral=integral)
        plans = planning.compare(state, start, options, solver) if compare else \
            [planning.plan(state, start, options, policy, solver)]
        body = plans if compare else plans[0]
    if out:
        write_text(out, json.dumps(body, indent=2) + "\n", "out")
    if fmt is Format.json:
        render.print_json(body)
    elif compare:
        console.print(render.table("Policies compared", [_plan_row(p) for p in plans]))
    else:
        _print_plan(plans[0])


@plan_app.command("apply")
def plan_apply(file: Annotated[Path, typer.Argument(help="a plan written by `gpufleet plan --out FILE`")],
               actor: ActorOpt = None) -> None:
    """Record a plan's loans as proposals (they await approval) and its installs as planned."""
    from gpufleet.services import planning
    from gpufleet.services.plan_file import read_plan

    if Settings.remote is not None:
        raise client.local_only("plan apply", Settings.remote)
    body = read_plan(file)
    written = planning.apply_plan(_fleet(), body, actor)
    console.print(f"recorded {len(written)} proposals from the {body['policy']} plan "
                  f"(events {written[0].seq}..{written[-1].seq})" if written else "the plan proposes nothing")


@app.command()
def generate(
    size: Annotated[str, typer.Argument(help="small, medium or large")],
    seed: Annotated[int, typer.Option(help="the same seed gives the same fleet")] = 0,
    out: Annotated[Path | None, typer.Option(help="write the scenario here (default: standard output)")] = None,
) -> None:
    """Write a synthetic fleet scenario (seeded) of a benchmark size, for `load` or `plan --scenario`."""
    import yaml

    from gpufleet.planner.generate import SIZES, generate_scenario

    if size not in SIZES:
        raise typer.BadParameter(f"must be one of {', '.join(SIZES)}", param_hint="SIZE")
    if out:
        check_writable(out, "out")
    text = yaml.safe_dump(generate_scenario(size, seed), sort_keys=False, width=120)
    if out:
        write_text(out, text, "out")
        console.print(f"wrote the {size} fleet (seed {seed}) to {out}")
    else:
        sys.stdout.write(text)


def _plan_row(plan: dict) -> dict:
    kpis = plan["kpis"]  # a server's plan for a principal who reads only some entities has no fleet totals
    idle = kpis["idle_gpu_weeks"].get("total", sum(kpis["idle_gpu_weeks"].values()))
    served = sum(sum(t.values()) for t in kpis["served_gpu_weeks"].values())
    unserved = sum(sum(t.values()) for t in kpis["unserved_gpu_weeks"].values())
    return {"policy": plan["policy"], "objective_usd": plan["objective"],
            "idle_gpu_weeks": idle, "served_gpu_weeks": served,
            "unserved_gpu_weeks": unserved, "loans": len(plan["loans"]), "reclaims": len(plan["reclaims"]),
            "solve_s": plan["solve"]["solve_s"]}


def _print_plan(plan: dict) -> None:
    console.print(render.table("Plan", [_plan_row(plan)]))
    value = [{"entity": e, "value_usd": v, "idle_gpu_weeks": plan["kpis"]["idle_gpu_weeks"].get(e, 0.0)}
             for e, v in plan["kpis"]["value_usd"].items()]
    console.print(render.table("Value and idle GPUs per entity", value))
    for key, title in [("loans", "Loans proposed"), ("reclaims", "Reclaims"), ("installs", "Installs"),
                       ("moves", "GPUs taken out of a site")]:
        if plan[key]:
            console.print(render.table(title, plan[key]))


@approvals_app.command("list")
def approvals_list(policy: PolicyOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Every transaction that needs approval, with its status and votes."""
    from gpufleet.services import governance

    _no_remote("--policy", policy, POLICY_IS_SERVERS)
    rows = Settings.remote.approvals() if Settings.remote else governance.approvals(_fleet(),
                                                                                    governance.load_policy(policy))
    if fmt is Format.json:
        render.print_json(rows)
    elif fmt is Format.csv:
        render.print_csv([r | {k: ";".join(r[k]) for k in ("approvals", "rejections", "waivers")}
                          | {"votes": ";".join(_signed(v) for v in r["votes"])} for r in rows])
    else:
        console.print(render.table("Transactions needing approval", [
            {k: v for k, v in r.items() if k != "content_sha256"}
            | {k: ", ".join(r[k]) or "-" for k in ("approvals", "rejections", "waivers")}
            | {"votes": ", ".join(_signed(v) for v in r["votes"]) or "-"} for r in rows]))


def _signed(vote: dict) -> str:
    """A vote and its signature's status, as a cell: ``person decision signed-valid``."""
    return f"{vote['person']} {vote['decision']} {vote['signature']}"


def _vote(decision: str, subject: str, person: str | None, reason: str, policy: Path | None, on: str | None,
          actor: str | None, sign_with: Path | None = None) -> None:
    from gpufleet.services import governance

    if Settings.remote is not None:  # the voter is the authenticated person: --person may only name them
        _no_remote("--actor", actor, ACTOR_IS_PRINCIPAL)
        _no_remote("--policy", policy, POLICY_IS_SERVERS)
        _no_remote("--on", on, "a vote is recorded on the server's date")
        me = Settings.remote.me()["principal"]
        if person not in (None, me):
            raise client.refuse_option("--person", f"you vote as '{me}', whom the token authenticates, "
                                                   f"not as '{person}'")
        person, seq = me, Settings.remote.vote(subject, decision, reason, sign=_signer(sign_with, subject,
                                                                                       decision, me))["seq"]
    elif person is None:
        raise typer.BadParameter("the voting person is required", param_hint="'--person'")
    else:
        fleet, rules, day = _fleet(), governance.load_policy(policy), parse_date(on, "on")
        signed = None
        if sign_with is not None:
            signed = governance.SignedVote(**_local_signature(fleet, rules, day, sign_with, subject, decision, person))
        seq = governance.vote(fleet, subject, person, decision, reason, rules, day, actor, signed=signed).seq
    how = " (signed)" if sign_with is not None else ""
    console.print(f"recorded event {seq}: {person} {decision} {subject}{how}")


def _signer(sign_with: Path | None, subject: str, decision: str, person: str):
    """In client mode, what signs the terms the server shows (None: an unsigned vote)."""
    if sign_with is None:
        return None
    from gpufleet.cli import signing

    def sign(terms: dict, content_sha256: str | None) -> dict:
        signing.show_terms(terms)
        return signing.sign_vote(sign_with, subject, decision, person, terms, content_sha256)

    return sign


def _local_signature(fleet: FleetService, policy, on, sign_with: Path, subject: str, decision: str,
                     person: str) -> dict:
    """Sign, on this machine, the terms the local ledger has now for ``subject``."""
    from datetime import UTC, datetime

    from gpufleet.cli import signing
    from gpufleet.errors import UnknownReference
    from gpufleet.services import governance

    day = on or datetime.now(UTC).date()
    terms = governance.current_terms(fleet, fleet.state(), subject, policy, day)
    if terms is None:
        raise UnknownReference(f"no transaction '{subject}' is recorded (use swap:ID, loan:ID or proposal:ID)",
                               field="subject")
    signing.show_terms(terms)
    return signing.sign_vote(sign_with, subject, decision, person, terms)


PersonOpt = Annotated[str | None, typer.Option(help="the voting person (in client mode: you, if given)")]
SignOpt = Annotated[Path | None, typer.Option("--sign-with", help="your private key file (mode 0600): sign the "
                                                                  "vote here over the transaction's terms")]


@approvals_app.command("approve")
def approvals_approve(subject: str, person: PersonOpt = None,
                      reason: Annotated[str, typer.Option()] = "", policy: PolicyOpt = None, on: OnOpt = None,
                      actor: ActorOpt = None, sign_with: SignOpt = None) -> None:
    """Approve (re-checks the price and the fleet now; an interested person is refused)."""
    _vote("approved", subject, person, reason, policy, on, actor, sign_with)


@approvals_app.command("reject")
def approvals_reject(subject: str, person: PersonOpt = None, reason: Annotated[str, typer.Option()] = "",
                     policy: PolicyOpt = None, on: OnOpt = None, actor: ActorOpt = None,
                     sign_with: SignOpt = None) -> None:
    """Reject a transaction."""
    _vote("rejected", subject, person, reason, policy, on, actor, sign_with)


@approvals_app.command("waive")
def approvals_waive(subject: str, person: PersonOpt = None,
                    reason: Annotated[str, typer.Option(help="required: why approval is waived")] = "",
                    policy: PolicyOpt = None, on: OnOpt = None, actor: ActorOpt = None,
                    sign_with: SignOpt = None) -> None:
    """Waive approval, with a written reason (reported as a waiver)."""
    _vote("waived", subject, person, reason, policy, on, actor, sign_with)


@app.command()
def audit(policy: PolicyOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Findings for the audit committee, with severity and evidence (event sequence numbers)."""
    from gpufleet.services import governance

    _no_remote("--policy", policy, POLICY_IS_SERVERS)
    rows = Settings.remote.audit() if Settings.remote else governance.audit(_fleet(), governance.load_policy(policy))
    if fmt is Format.json:
        render.print_json(rows)
    elif fmt is Format.csv:
        render.print_csv([r | {"evidence_seqs": " ".join(map(str, r["evidence_seqs"]))} for r in rows])
    else:
        console.print(render.table("Findings", [r | {"evidence_seqs": ", ".join(map(str, r["evidence_seqs"]))}
                                                for r in rows], ["severity", "kind", "title", "detail",
                                                                 "value_usd", "evidence_seqs"]))


@app.command()
def costs(
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: every month recorded)")] = None,
    entity: Annotated[str | None, typer.Option(help="only this entity")] = None,
    life_years: Annotated[float, typer.Option(help="straight-line depreciation life, years")] = 6.0,
    usd_per_kwh: Annotated[float, typer.Option(help="power price, USD per kWh")] = 0.08,
    fmt: FormatOpt = Format.table,
) -> None:
    """Chargeback per entity per month: depreciation, GPU-hours owned/used/lent/borrowed/idle, power."""
    from gpufleet.domain.costs import CostPolicy
    from gpufleet.services.costs import chargeback

    if Settings.remote is not None:
        rows = Settings.remote.costs(month, entity, life_years, usd_per_kwh)
    else:
        rows = chargeback(_fleet(), month, entity, CostPolicy(life_years=life_years, usd_per_kwh=usd_per_kwh))
    if fmt is Format.json:
        render.print_json(rows)
    elif fmt is Format.csv:
        render.print_csv(rows)
    else:
        console.print(render.table("Chargeback (owned = self + lent + idle + failed GPU-hours)", rows))


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="the HTML file to write")] = Path("gpufleet-report.html"),
    policy: PolicyOpt = None,
    start: Annotated[str | None, typer.Option(help="first date of the charts (YYYY-MM-DD)")] = None,
    end: Annotated[str | None, typer.Option(help="the as-of date (default: the ledger's last date)")] = None,
    sweep: Annotated[list[Path] | None, typer.Option(
        "--sweep", help="a stored sweep folder (`gpufleet sweep supply|quotas --out`) for the Risk section; "
                        "repeatable")] = None,
) -> None:
    """Write the self-contained HTML report for a board or audit committee."""
    from gpufleet.reports.board import write_report
    from gpufleet.services import governance

    check_writable(out, "out")
    path = write_report(_fleet(), out, governance.load_policy(policy), parse_date(start, "start"),
                        parse_date(end, "end"), sweeps=sweep or [])
    console.print(f"wrote {path}")


# -- the ledger ------------------------------------------------------------------------


@ledger_app.command("verify")
def verify(
    expect: Annotated[list[str] | None, typer.Option(
        "--expect", help="SEQ:HASH published earlier ('SEQ HASH', as `gpufleet ledger head` prints it): event "
                         "SEQ must still have HASH; repeatable")] = None,
    expect_head: Annotated[str | None, typer.Option(help="deprecated, use --expect SEQ:HASH: a hash that some "
                                                         "event of the chain must have")] = None,
    replay: Annotated[bool, typer.Option(help="also replay every event and recount the invariants")] = False,
    workers: Annotated[int | None, typer.Option(help="processes hashing in parallel on large ledgers "
                                                     "(default: CPUs, at most 4)")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Check the hash chain, the anchors given and every snapshot; exit 1 naming the first bad one."""
    anchors = [parse_anchor(text) for text in expect or []]
    if Settings.remote is not None:
        _no_remote("--expect-head", expect_head, "it is deprecated: pass --expect SEQ:HASH")
        _no_remote("--workers", workers, "the server decides how it hashes")
        _show_verify(Settings.remote.verify(expect or [], replay), bool(anchors), fmt)
        return
    if expect_head is not None:
        anchors.append(parse_anchor(expect_head, "expect_head", seq_optional=True))
        render.errors.print("note: --expect-head is deprecated: pass --expect SEQ:HASH, as `gpufleet ledger head` "
                            "prints it", markup=False, highlight=False)
    service = _fleet()
    report = service.verify(anchors, workers)
    out = asdict(report)
    if report.ok and replay:
        rep = service.replay()
        out |= {"ok": rep.ok, "replay_problems": rep.problems}
    _show_verify(out, bool(anchors), fmt)


def _show_verify(out: dict, anchored: bool, fmt: Format) -> None:
    """``ledger verify``'s output from its report (local or the server's job); exit 1 if it fails."""
    if fmt is Format.json:
        render.print_json(out)
    elif out["ok"]:
        anchors = f", anchors matched: {out['anchors_checked']}" if anchored else ""
        console.print(f"ledger OK: {out['events_checked']:,} events, {out['snapshots_checked']:,} snapshots"
                      f"{anchors}, head {out['head_hash']}")
    else:
        where = "replay: " + "; ".join(out.get("replay_problems", []))
        if out["bad_snapshot_seq"] is not None:
            where = str(out["reason"])
        elif "replay_problems" not in out:  # the chain itself failed (a replay runs only on a good chain)
            where = f"first bad event: {out['first_bad_seq']}: {out['reason']}"
        render.errors.print(f"ledger does NOT verify: {where}", markup=False, highlight=False)
    if not out["ok"]:
        raise typer.Exit(1)


@ledger_app.command("head")
def head() -> None:
    """Print the head's sequence number and hash: publish it, and check it later with `ledger verify --expect`."""
    h = SimpleNamespace(**Settings.remote.head()) if Settings.remote else _fleet().head()
    console.print(f"{h.seq} {h.hash}")


@schema_app.command("scenario")
def schema_scenario() -> None:
    """The JSON Schema of scenario files, generated from the models."""
    from gpufleet.domain.scenario import json_schema

    render.print_json(json_schema())


# -- recording everyday events -----------------------------------------------------------


def _record(event_type: str, data: dict, on: str | None, actor: str | None, key: str | None,
            policy: Path | None = None, after_the_fact: bool = False) -> None:
    fields = {k: v for k, v in data.items() if v is not None}
    payload = make_payload(event_type, fields)
    if Settings.remote is not None:
        _no_remote("--actor", actor, ACTOR_IS_PRINCIPAL)
        _no_remote("--policy", policy, POLICY_IS_SERVERS)
        _no_remote("--after-the-fact", after_the_fact, "history without its approval is recorded locally, by the "
                                                       "ledger's custodian")
        if event_type in ("approval_recorded", "event_voided"):
            raise client.refuse_option(event_type, "votes go through `approvals approve|reject|waive`; a void is "
                                                   "the local custodian's")
        _print_recorded(SimpleNamespace(**Settings.remote.record(event_type, fields, parse_date(on, "on"), key)))
        return
    rules = None
    if policy is not None:
        from gpufleet.services.governance import load_policy

        rules = load_policy(policy)
    event = _fleet().record(payload, parse_date(on, "on"), actor, key, policy=rules, after_the_fact=after_the_fact)
    _print_recorded(event)


def _print_recorded(event) -> None:
    """One recorded event (an Event, or the server's answer as attributes)."""
    console.print(f"recorded event {event.seq}: {event.event_type} effective {event.effective_date} "
                  f"(hash {event.hash[:16]})")


@app.command()
def record(
    event_type: Annotated[str, typer.Argument(help="any event type, e.g. lot_rescheduled")],
    data: Annotated[str, typer.Option("--data", help="the payload as a JSON object")],
    after_the_fact: Annotated[bool, typer.Option(help="record history without its approval "
                                                      "(the audit flags it)")] = False,
    policy: PolicyOpt = None,
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Record any event from its JSON payload (see docs/events.md); a loan or swap that needs
    related-party approval is refused without it, as `loan open` refuses it."""
    try:
        fields = json.loads(data)
    except ValueError as exc:  # not JSON, or a number past Python's 4,300 digits
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    except RecursionError:
        raise typer.BadParameter("nested too deeply to read", param_hint="--data") from None
    if not isinstance(fields, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--data")
    _record(event_type, fields, on, actor, idempotency_key, policy, after_the_fact)


@app.command()
def ship(lot: str, on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None) -> None:
    """A delivery lot leaves the vendor."""
    _record("lot_shipped", {"lot": lot}, on, actor, idempotency_key)


@app.command()
def deliver(lot: str, on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None) -> None:
    """A delivery lot arrives in its owner's warehouse."""
    _record("lot_delivered", {"lot": lot}, on, actor, idempotency_key)


@app.command()
def install(
    owner: Annotated[str, typer.Option()], model: Annotated[str, typer.Option()],
    site: Annotated[str, typer.Option()], gpus: Annotated[int, typer.Option()],
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Install GPUs from the owner's warehouse at a site (checked against slots and power)."""
    _record("gpus_installed", {"owner": owner, "model": model, "site": site, "gpus": gpus}, on, actor,
            idempotency_key)


@app.command()
def fail(
    owner: Annotated[str, typer.Option()], model: Annotated[str, typer.Option()],
    gpus: Annotated[int, typer.Option()],
    site: Annotated[str | None, typer.Option(help="where they were installed (default: the warehouse)")] = None,
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Record failed GPUs."""
    _record("gpus_failed", {"owner": owner, "model": model, "gpus": gpus, "site": site}, on, actor,
            idempotency_key)


@app.command()
def retire(
    owner: Annotated[str, typer.Option()], model: Annotated[str, typer.Option()],
    gpus: Annotated[int, typer.Option()],
    site: Annotated[str | None, typer.Option(help="retire installed GPUs from this site")] = None,
    from_failed: Annotated[bool, typer.Option(help="retire failed GPUs")] = False,
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Retire GPUs for good."""
    _record("gpus_retired", {"owner": owner, "model": model, "gpus": gpus, "site": site,
                             "from_failed": from_failed}, on, actor, idempotency_key)


@app.command()
def claim(
    claim_id: Annotated[str, typer.Argument(metavar="CLAIM")],
    claimant: Annotated[str, typer.Option()],
    metric: Annotated[str, typer.Option(help="active_gpus or gpu_spend_usd")],
    target: Annotated[float, typer.Option()],
    deadline: Annotated[str, typer.Option(help="YYYY-MM-DD")],
    model: Annotated[str | None, typer.Option()] = None,
    person: Annotated[str | None, typer.Option()] = None,
    period_start: Annotated[str | None, typer.Option(help="start of the period for spend claims")] = None,
    source_url: Annotated[str | None, typer.Option()] = None,
    on: Annotated[str | None, typer.Option("--on", help="the date the claim was stated")] = None,
    actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Record a public claim (stated on --on)."""
    _record("claim_recorded", {
        "claim": claim_id, "claimant": claimant, "metric": metric, "target": target, "deadline": deadline,
        "model": model, "person": person, "period_start": period_start, "source_url": source_url,
    }, on, actor, idempotency_key)


@loan_app.command("open")
def loan_open(
    loan: str,
    lender: Annotated[str, typer.Option()], borrower: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()], site: Annotated[str, typer.Option()],
    gpus: Annotated[int, typer.Option()], end: Annotated[str, typer.Option(help="end date YYYY-MM-DD")],
    fee: Annotated[float, typer.Option(help="USD per GPU-hour")] = 0.0,
    notice_days: Annotated[int, typer.Option(help="reclaim notice in days")] = 0,
    after_the_fact: Annotated[bool, typer.Option(help="record a past loan without its approval "
                                                      "(the audit flags it)")] = False,
    policy: PolicyOpt = None,
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Lend installed GPUs from --on until --end (a related-party loan needs its approval first)."""
    from gpufleet.services import governance

    fields = {"loan": loan, "lender": lender, "borrower": borrower, "model": model, "site": site, "gpus": gpus,
              "end_date": end, "fee_usd_per_gpu_hour": fee, "reclaim_notice_days": notice_days}
    if Settings.remote is not None:  # the server's write gate is the approval gate of open_loan
        _record("loan_opened", fields, on, actor, idempotency_key, policy, after_the_fact)
        return
    payload = make_payload("loan_opened", fields)
    day = parse_date(on, "on") or datetime.now(UTC).date()
    event = governance.open_loan(_fleet(), payload, day, actor, idempotency_key, governance.load_policy(policy),
                                 after_the_fact)
    _print_recorded(event)


@loan_app.command("reclaim")
def loan_reclaim(
    loan: str, gpus: Annotated[int, typer.Option()],
    notice_given_on: Annotated[str, typer.Option(help="when the lender gave notice, YYYY-MM-DD")],
    on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Take lent GPUs back (effective --on, no earlier than the notice period allows)."""
    _record("loan_reclaimed", {"loan": loan, "gpus": gpus, "notice_given_on": notice_given_on}, on, actor,
            idempotency_key)


@loan_app.command("close")
def loan_close(loan: str, on: OnOpt = None, actor: ActorOpt = None, idempotency_key: KeyOpt = None) -> None:
    """End a loan; the GPUs still lent return to the lender."""
    _record("loan_closed", {"loan": loan}, on, actor, idempotency_key)


@app.command()
def void(
    seq: int, reason: Annotated[str, typer.Option(help="why the event is wrong")],
    actor: ActorOpt = None, idempotency_key: KeyOpt = None,
) -> None:
    """Correct the ledger: treat event SEQ as never having happened (the event itself stays)."""
    _record("event_voided", {"seq": seq, "reason": reason}, None, actor, idempotency_key)
from gpufleet.cli import scheduling as _scheduling  # noqa: E402,F401  (registers simulate and export)


# -- the service -----------------------------------------------------------------------

from gpufleet.cli import service as _service  # noqa: E402  (its commands need `app` above)

app.command()(_service.serve)
app.add_typer(_service.db_app, name="db")
app.add_typer(_service.users_app, name="users")
app.add_typer(_service.tokens_app, name="tokens")
app.add_typer(_service.access_app, name="access")

from gpufleet.cli import proofs as _proofs  # noqa: E402  (prove inclusion|consistency, tree root)

app.add_typer(_proofs.prove_app, name="prove")
app.add_typer(_proofs.tree_app, name="tree")
app.command()(client.login)
app.command()(client.logout)

from gpufleet.cli import checkpoints as _checkpoints  # noqa: E402,F401  (registers keys generate, checkpoint)
from gpufleet.cli import signing as _signing  # noqa: E402,F401  (registers keys register|list|revoke)
from gpufleet.cli import disclosure as _disclosure  # noqa: E402  (disclose, verify-bundle)

app.command("disclose")(_disclosure.disclose)
app.command("verify-bundle")(_disclosure.verify_bundle)

from gpufleet.cli import sweeps as _sweeps  # noqa: E402  (sweep supply|quotas)

app.add_typer(_sweeps.sweep_app, name="sweep")
