"""Disclosure bundles: select events, prove each against a checkpoint, and write them in one file that
:func:`gpufleet.domain.disclosure.verify_bundle` checks offline (docs/disclosure.md, "Disclosure bundles").

Nothing is signed here: the bundle carries a checkpoint that was signed before (the latest recorded, or a
note file given), after checking that the ledger still matches it. Events not selected are not revealed:
only hashes of them appear, in the audit paths.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime

from sqlalchemy import Connection

from gpufleet.domain import access, chain, vote_signing
from gpufleet.domain import events as ev
from gpufleet.domain.chain import Event
from gpufleet.domain.disclosure import FORMAT, KINDS, Bundle, load_bundle
from gpufleet.domain.governance import GovernancePolicy, transactions
from gpufleet.domain.notes import Checkpoint, VerifierKey, open_note, parse_checkpoint, split_note
from gpufleet.domain.parties import related_parties
from gpufleet.domain.state import FleetState
from gpufleet.errors import ConflictError, InputError, LedgerCorrupt
from gpufleet.ledger import merkle_store
from gpufleet.ledger.store import Ledger
from gpufleet.services import checkpoints
from gpufleet.services.fleet import FleetService

LOAN_TYPES = ("loan_opened", "loan_reclaimed", "loan_closed", "loan_proposed")
CLAIM_TYPES = ("claim_recorded",)
KEY_TYPES = ("person_key_registered", "person_key_revoked")
Readable = Callable[[Event], bool]


class NoCheckpoint(ConflictError):
    """No checkpoint is recorded: a bundle is proven against one."""


def read_checkpoint(note: str, what: str = "checkpoint") -> Checkpoint:
    """The checkpoint in a signed note (its signatures are the reader's to check); InputError naming it."""
    body, _sigs = split_note(note)
    try:
        return parse_checkpoint(body)
    except InputError as exc:
        raise InputError(f"the {what} is not a checkpoint note: {exc.message}", field=what) from None


def latest_note(fleet: FleetService) -> str:
    """The latest recorded checkpoint's note; :class:`NoCheckpoint` saying how to make one."""
    found = checkpoints.latest(fleet)
    if found is None:
        raise NoCheckpoint("no checkpoint is recorded yet: a disclosure is proven against one; create it with "
                           "`gpufleet checkpoint create --key FILE` (or POST /v1/checkpoints)", field="checkpoint")
    return found.note


def match_ledger(conn: Connection, checkpoint: Checkpoint, what: str = "checkpoint") -> None:
    """The ledger's tree at the checkpoint's size has its root (and its chain head): else LedgerCorrupt."""
    try:
        checkpoints.check_against_ledger(conn, checkpoint)
    except LedgerCorrupt as exc:
        raise LedgerCorrupt(f"the ledger does not match this {what} (size {checkpoint.tree_size}, root "
                            f"{checkpoint.root_hash.hex()[:16]}...): {exc.message}", seq=exc.seq) from None


# -- selection -----------------------------------------------------------------------------------


def _payload(e: Event) -> ev.Payload | None:
    try:
        return ev.payload_class(e.event_type).model_validate_json(e.payload)
    except Exception:  # an event that no longer validates is not selected by content
        return None


def _related_subjects(state: FleetState) -> set[str]:
    """The subjects (swap:ID, loan:ID, proposal:ID) of transactions between related parties."""
    related = related_parties(state)
    subjects = set()
    for t in transactions(state, GovernancePolicy(), date.max):
        if frozenset((t.giver, t.receiver)) in related:
            subjects.add(t.subject)
    return subjects


def _subjects_of(p: ev.Payload) -> set[str]:
    """The transaction subjects an event belongs to."""
    match p:
        case ev.DeliverySlotSwap():
            return {f"swap:{p.swap}"}
        case ev.LoanOpened() | ev.LoanReclaimed() | ev.LoanClosed():
            return {f"loan:{p.loan}", f"proposal:{p.loan}"}
        case ev.LoanProposed():
            return {f"proposal:{p.loan}", f"loan:{p.loan}"}
        case ev.ApprovalRecorded():
            return {p.subject}
    return set()


def _kind_matches(kind: str, e: Event, p: ev.Payload, related: set[str]) -> bool:
    if kind == "all":
        return True
    if kind == "claims":
        return e.event_type in CLAIM_TYPES
    if kind == "loans":
        return e.event_type in LOAN_TYPES or (isinstance(p, ev.ApprovalRecorded) and
                                              p.subject.split(":")[0] in ("loan", "proposal"))
    return bool(_subjects_of(p) & related)


def select(events: Iterable[Event], state: FleetState, kind: str, entity: str | None = None,
           start: date | None = None, end: date | None = None) -> list[Event]:
    """The events of ``kind`` (related-party, claims, loans, all) where ``entity`` is a party, effective
    from ``start`` to ``end``; a void of a selected event is selected with it."""
    if kind not in KINDS:
        raise InputError(f"'{kind}' is not one of {', '.join(KINDS)}", field="kind")
    if entity is not None and entity not in state.entities:
        raise InputError(f"no entity '{entity}' in the ledger", field="entity")
    related = _related_subjects(state) if kind == "related-party" else set()
    chosen: list[Event] = []
    picked: set[int] = set()
    for e in events:
        p = _payload(e)
        if p is None:
            continue
        if isinstance(p, ev.EventVoided):
            if p.seq in picked:
                chosen.append(e)
                picked.add(e.seq)
            continue
        if start is not None and e.effective_date < start or end is not None and e.effective_date > end:
            continue
        if not _kind_matches(kind, e, p, related):
            continue
        if entity is not None and entity not in access.parties(state, p):
            continue
        chosen.append(e)
        picked.add(e.seq)
    return chosen


# -- building ------------------------------------------------------------------------------------


def envelope(e: Event) -> dict:
    """The readable copy: the envelope with the payload parsed."""
    return {"seq": e.seq, "recorded_at": e.recorded_at, "effective_date": e.effective_date.isoformat(),
            "actor": e.actor, "type": e.event_type, "idempotency_key": e.idempotency_key,
            "prev_hash": e.prev_hash, "payload": json.loads(e.payload), "hash": e.hash}


def _item(conn: Connection, e: Event, size: int, role: str) -> dict:
    data = chain.canonical_bytes(e.seq, e.recorded_at, e.effective_date.isoformat(), e.actor, e.event_type,
                                 e.idempotency_key, e.prev_hash, e.payload)
    proof = merkle_store.inclusion(conn, e.seq, size)
    return {"seq": e.seq, "role": role, "canonical": base64.b64encode(data).decode("ascii"), "event": envelope(e),
            "leaf_index": proof.leaf_index, "audit_path": [h.hex() for h in proof.audit_path]}


def _votes(state: FleetState, chosen: list[Event], all_events: list[Event],
           policy: GovernancePolicy) -> tuple[list[dict], list[Event]]:
    """Each selected approval's vote with its signature status and terms; the voters' key events."""
    order = vote_signing.recording_order((e.seq, e.event_type, e.payload) for e in all_events)
    keys = {}
    for e in all_events:
        if e.event_type in KEY_TYPES:
            p = json.loads(e.payload)
            key_id = p.get("key_id") or p["public_key"].split("+")[1]
            keys.setdefault((p["person"], key_id), []).append(e)
    votes, support = [], []
    for e in chosen:
        if e.event_type != "approval_recorded":
            continue
        p = json.loads(e.payload)
        approval = state.approvals.get(p["approval"])
        if approval is None:
            continue
        terms = vote_signing.terms_of(state, policy, approval.subject, approval.on, order)
        status = vote_signing.vote_signature_status(state, approval, terms)
        key_events = keys.get((approval.person, approval.key_id or ""), [])
        registered = next((k for k in key_events if k.event_type == "person_key_registered"), None)
        support.extend(key_events)
        votes.append({"seq": e.seq, "subject": approval.subject, "person": approval.person,
                      "decision": approval.decision, "on": approval.on.isoformat(), "status": status.status,
                      "detail": status.detail, "key_id": approval.key_id,
                      "key_seq": registered.seq if registered else None,
                      "content_sha256": approval.content_sha256,
                      "terms": terms if approval.signature is not None else None})
    return votes, support


def build_bundle(fleet: FleetService, kind: str = "all", entity: str | None = None, start: date | None = None,
                 end: date | None = None, *, note: str | None = None, keys: Iterable[VerifierKey] = (),
                 previous: str | None = None, policy: GovernancePolicy | None = None,
                 readable: Readable | None = None, now: datetime | None = None) -> dict:
    """The disclosure bundle (JSON-ready) of the selected events, proven against the checkpoint ``note``
    (default: the latest recorded), with a consistency proof from ``previous`` when given. ``readable``
    filters what a caller may see (the API); ``keys``: the vkeys listed, each must have signed the note."""
    note = note if note is not None else latest_note(fleet)
    checkpoint = read_checkpoint(note)
    listed = [_listed(note, k) for k in keys]
    policy = policy or GovernancePolicy()
    state = fleet.state()
    with fleet.engine.connect() as conn:
        match_ledger(conn, checkpoint)
        size = checkpoint.tree_size
        everything = list(Ledger(conn).events(0, size))
        chosen = [e for e in select(everything, state, kind, entity, start, end)
                  if readable is None or readable(e)]
        votes, support = _votes(state, chosen, everything, policy)
        selected = {e.seq for e in chosen}
        extra = sorted({e.seq: e for e in support if e.seq not in selected}.values(), key=lambda e: e.seq)
        items = [_item(conn, e, size, "selected") for e in chosen] + [_item(conn, e, size, "voter-key")
                                                                       for e in extra]
        consistency = _consistency(conn, previous, checkpoint) if previous is not None else None
    bundle = {"format": FORMAT, "created_at": chain.format_instant(now or datetime.now(UTC)),
              "selection": {"entity": entity, "kind": kind, "from": start.isoformat() if start else None,
                            "to": end.isoformat() if end else None, "seqs": sorted(selected)},
              "checkpoint": note, "keys": listed, "events": sorted(items, key=lambda i: i["seq"]), "votes": votes,
              "consistency": consistency}
    load_bundle(bundle)  # the format's own check: what is written is what a verifier reads
    return bundle


def signed_by(note: str, key: VerifierKey) -> bool:
    """Whether ``key`` signed the note (a server's key may not have signed an older checkpoint)."""
    try:
        open_note(note, [key])
    except Exception:
        return False
    return True


def _listed(note: str, key: VerifierKey) -> str:
    """A key to list in the bundle: it must have signed the note."""
    try:
        open_note(note, [key])
    except Exception as exc:
        raise InputError(f"the key {key.label} did not sign the checkpoint: {exc}", field="key") from None
    return key.text


def _consistency(conn: Connection, previous: str, checkpoint: Checkpoint) -> dict:
    old = read_checkpoint(previous, "previous")
    if old.tree_size > checkpoint.tree_size:
        raise InputError(f"the previous checkpoint (size {old.tree_size}) is larger than the checkpoint "
                         f"(size {checkpoint.tree_size})", field="previous")
    match_ledger(conn, old, "previous checkpoint")
    proof = merkle_store.consistency(conn, old.tree_size, checkpoint.tree_size)
    return {"previous_checkpoint": previous, "old_size": old.tree_size, "new_size": checkpoint.tree_size,
            "proof": [h.hex() for h in proof.proof]}


def bundle_text(bundle: dict | Bundle) -> str:
    """The bundle as written to a file: JSON, two-space indented, a final newline."""
    data = bundle.model_dump(mode="json", by_alias=True) if isinstance(bundle, Bundle) else bundle
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
