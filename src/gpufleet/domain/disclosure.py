"""Disclosure bundles (pure): the file format and its offline verification (docs/disclosure.md,
"Disclosure bundles").

A bundle (format ``gpufleet-disclosure/v1``) holds a signed checkpoint, the selected events in their
canonical bytes with an RFC 9162 inclusion proof each against the checkpoint's root, the voters' key
registrations (proven the same way), each vote's signature status with the terms it signed, and
optionally a consistency proof from an earlier checkpoint. :func:`verify_bundle` checks all of it with
no database and no server: the readable copy of each event is re-derived from its canonical bytes and
never trusted, the note's signatures are checked with the reader's keys, and every vote is recomputed.
The first failure raises :class:`BundleInvalid` naming the item (event seq, signature, vote, proof).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpufleet.domain import merkle, vote_signing
from gpufleet.domain.chain import canonical_bytes
from gpufleet.domain.notes import (
    Checkpoint, Note, SignatureError, SignaturePolicy, VerifierKey, open_checkpoint, open_note, parse_vkey,
    verify_with_policy,
)
from gpufleet.errors import GpufleetError, InputError

FORMAT = "gpufleet-disclosure/v1"
KINDS = ("related-party", "claims", "loans", "all")
FIELDS = ("seq", "recorded_at", "effective_date", "actor", "type", "idempotency_key", "prev_hash", "payload")
Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class BundleInvalid(SignatureError):
    """The bundle does not verify: ``item`` names what failed first (exit 1)."""

    def __init__(self, item: str, reason: str):
        self.item = item
        super().__init__(f"{item}: {reason}")


class BundleFormatError(InputError):
    """The file is not a disclosure bundle of a known format (exit 3)."""


# -- the format ----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Envelope(_Model):
    """The readable copy of an event; ``payload`` parsed. A verifier re-derives it from the bytes."""

    seq: int
    recorded_at: str
    effective_date: str
    actor: str
    type: str
    idempotency_key: str | None
    prev_hash: str
    payload: dict
    hash: Hex


class BundleEvent(_Model):
    """One disclosed event: its canonical bytes (base64), the readable copy, its leaf and audit path."""

    seq: Annotated[int, Field(ge=1)]
    role: Literal["selected", "voter-key"] = "selected"
    canonical: str = Field(description="base64 of the canonical bytes (docs/ledger.md)")
    event: Envelope
    leaf_index: Annotated[int, Field(ge=0)]
    audit_path: list[Hex]


class BundleVote(_Model):
    """A vote (an approval_recorded event of the bundle) and its signature's status, with the terms signed."""

    seq: int = Field(description="the approval_recorded event")
    subject: str
    person: str
    decision: str
    on: str
    status: Literal["unsigned", "signed-valid", "signed-invalid"]
    detail: str = ""
    key_id: str | None = None
    key_seq: int | None = Field(None, description="the person_key_registered event of the key, in the bundle")
    content_sha256: str | None = None
    terms: dict | None = Field(None, description="the transaction's terms whose content_sha256 the vote signed")


class Selection(_Model):
    entity: str | None = None
    kind: Literal["related-party", "claims", "loans", "all"] = "all"
    from_: Annotated[str | None, Field(alias="from")] = None
    to: str | None = None
    seqs: list[int] = Field(description="every event the selection matched (all of them are in `events`)")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BundleConsistency(_Model):
    """The proof that the tree of an earlier checkpoint is a prefix of the bundle's checkpoint's tree."""

    previous_checkpoint: str = Field(description="the earlier checkpoint's signed note")
    old_size: int
    new_size: int
    proof: list[Hex]


class Bundle(_Model):
    format: Literal["gpufleet-disclosure/v1"]
    created_at: str
    selection: Selection
    checkpoint: str = Field(description="the signed checkpoint note (C2SP), every signature line")
    keys: list[str] = Field(description="the verifier keys (vkey text) of the log and the cosigners")
    events: list[BundleEvent]
    votes: list[BundleVote] = Field(default_factory=list)
    consistency: BundleConsistency | None = None


def load_bundle(data: str | bytes | dict, source: str = "bundle") -> Bundle:
    """A bundle from its JSON text (or parsed JSON); :class:`BundleFormatError` naming the first bad field."""
    try:
        raw = json.loads(data) if isinstance(data, (str, bytes)) else data
    except (ValueError, RecursionError) as exc:
        raise BundleFormatError(f"{source} is not JSON: {exc}", field="bundle") from None
    if isinstance(raw, dict) and raw.get("format") != FORMAT:
        raise BundleFormatError(f"{source} has format {raw.get('format')!r}, not {FORMAT!r}", field="format")
    try:
        return Bundle.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "bundle"
        raise BundleFormatError(f"{source}: {first['msg']}", field=where) from None


# -- canonical bytes ----------------------------------------------------------------------------


def parse_canonical(data: bytes) -> dict[str, object]:
    """The envelope fields of an event's canonical bytes (netstrings; ``~`` for no idempotency key).
    ValueError unless the bytes are exactly the canonical encoding of the fields read."""
    fields: list[str | None] = []
    at = 0
    for name in FIELDS:
        if name == "idempotency_key" and data[at:at + 1] == b"~":
            fields.append(None)
            at += 1
            continue
        colon = data.find(b":", at, at + 21)
        digits = data[at:colon] if colon > at else b""
        if not digits.isdigit():
            raise ValueError(f"field '{name}' is not a netstring")
        end = colon + 1 + int(digits)
        if data[end:end + 1] != b",":
            raise ValueError(f"field '{name}' is not a netstring (no ',' after {int(digits)} bytes)")
        fields.append(data[colon + 1:end].decode("utf-8"))
        at = end + 1
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes follow the last field")
    seq, recorded, effective, actor, etype, key, prev, payload = fields
    if not str(seq).isdigit():
        raise ValueError("field 'seq' is not a number")
    out = {"seq": int(seq), "recorded_at": recorded, "effective_date": effective, "actor": actor, "type": etype,
           "idempotency_key": key, "prev_hash": prev, "payload": payload}
    if canonical_bytes(*(out[f] for f in FIELDS)) != data:
        raise ValueError("the bytes are not in canonical form")
    return out


# -- verification -------------------------------------------------------------------------------


@dataclass
class ProvenEvent:
    """An event re-derived from its canonical bytes and proven in the checkpoint's tree."""

    seq: int
    role: str
    fields: dict
    payload: dict
    hash: str


@dataclass
class Report:
    """What :func:`verify_bundle` proved."""

    checkpoint: Checkpoint
    note: Note
    satisfied: tuple = ()
    events: list[ProvenEvent] = field(default_factory=list)
    votes: list[dict] = field(default_factory=list)
    consistency: dict | None = None
    selection: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        cp = self.checkpoint
        return {"ok": True, "format": FORMAT, "selection": self.selection,
                "checkpoint": {"origin": cp.origin, "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
                               "recorded_at": cp.recorded_at,
                               "signed_by": [s.label for s in self.note.signatures],
                               "not_checked": [s.label for s in self.note.unverified],
                               "policy_satisfied_by": [s.label for s in self.satisfied]},
                "events": [{"seq": e.seq, "role": e.role, "type": e.fields["type"],
                            "effective_date": e.fields["effective_date"], "actor": e.fields["actor"],
                            "hash": e.hash, "what": describe(e.fields["type"], e.payload)} for e in self.events],
                "votes": self.votes, "consistency": self.consistency}


def describe(event_type: str, payload: dict) -> str:
    """One line saying what an event is about, from its payload (for the table of proven events)."""
    keys = ("swap", "loan", "claim", "subject", "decision", "person", "lender", "borrower", "claimant", "gpus",
            "target", "metric", "key_id", "seq")
    parts = [f"{k}={payload[k]}" for k in keys if payload.get(k) is not None]
    return " ".join(parts)[:160] or event_type


def verify_bundle(bundle: Bundle, verifiers: Sequence[VerifierKey], policy: SignaturePolicy | None = None,
                  previous: str | None = None) -> Report:
    """Verify ``bundle`` offline with the reader's ``verifiers`` (and ``policy``); ``previous``: a checkpoint
    note the reader holds from earlier, which the bundle's consistency proof must start from."""
    report = _checkpoint(bundle, verifiers, policy)
    _bundle_keys(bundle, report.note)
    report.events = [_event(item, report.checkpoint) for item in sorted(bundle.events, key=lambda e: e.seq)]
    _coverage(bundle, report.events)
    report.votes = [_vote(v, {e.seq: e for e in report.events}) for v in bundle.votes]
    _every_approval_has_its_vote(bundle, report.events)
    report.consistency = _consistency(bundle, report.checkpoint, verifiers, policy, previous)
    sel = bundle.selection
    report.selection = {"entity": sel.entity, "kind": sel.kind, "from": sel.from_, "to": sel.to,
                        "events": len(sel.seqs)}
    return report


def _open(note: str, verifiers: Sequence[VerifierKey], policy: SignaturePolicy | None,
          what: str) -> tuple[Checkpoint, Note, tuple]:
    """Open a checkpoint note with the reader's keys (and policy); BundleInvalid naming ``what``."""
    try:
        if policy is not None:
            merged = SignaturePolicy.model_validate(policy.model_dump() | {
                "keys": [*policy.keys, *(k.text for k in verifiers if k.text not in policy.keys)]})
            return verify_with_policy(note, merged)
        if not verifiers:
            raise InputError("give at least one verifier key (--key) or a policy", field="key")
        checkpoint, opened = open_checkpoint(note, list(verifiers))
        return checkpoint, opened, ()
    except SignatureError as exc:
        raise BundleInvalid(what, exc.message) from None
    except InputError as exc:
        if exc.field == "key":
            raise
        raise BundleInvalid(what, f"malformed: {exc}") from None


def _checkpoint(bundle: Bundle, verifiers, policy) -> Report:
    checkpoint, note, satisfied = _open(bundle.checkpoint, verifiers, policy, "the checkpoint's signatures")
    return Report(checkpoint, note, satisfied)


def _bundle_keys(bundle: Bundle, note: Note) -> None:
    """Each key the bundle lists must have signed its checkpoint (a swapped key is refused)."""
    for text in bundle.keys:
        try:
            key = parse_vkey(text)
            open_note(bundle.checkpoint, [key])
        except GpufleetError as exc:
            raise BundleInvalid(f"the bundle's key {text.split('+')[0]!r}",
                                f"it did not sign the checkpoint ({exc.message})") from None


def _event(item: BundleEvent, checkpoint: Checkpoint) -> ProvenEvent:
    """Re-derive the event from its canonical bytes, compare the readable copy, verify its inclusion."""
    name = f"event {item.seq}"
    try:
        data = base64.b64decode(item.canonical.encode("ascii"), validate=True)
        fields = parse_canonical(data)
        payload = json.loads(fields["payload"])
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise BundleInvalid(name, f"its canonical bytes do not decode: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if fields["seq"] != item.seq or item.leaf_index != item.seq - 1:
        raise BundleInvalid(name, f"its canonical bytes are event {fields['seq']}'s, at leaf index {item.leaf_index}")
    shown = item.event.model_dump()
    derived = {k: fields[k] for k in FIELDS} | {"payload": payload, "hash": digest}
    for key in (*FIELDS, "hash"):
        if shown[key] != derived[key]:
            raise BundleInvalid(name, f"the readable copy's {key} is not what its canonical bytes say")
    path = [bytes.fromhex(h) for h in item.audit_path]
    problem = merkle.inclusion_problem(merkle.leaf_hash(data), item.leaf_index, checkpoint.tree_size, path,
                                       checkpoint.root_hash)
    if problem is not None:
        raise BundleInvalid(name, f"its inclusion proof does not verify against the checkpoint's root "
                                  f"(tree size {checkpoint.tree_size}): {problem}")
    return ProvenEvent(item.seq, item.role, fields, payload, digest)


def _coverage(bundle: Bundle, events: list[ProvenEvent]) -> None:
    """Every event the selection claims is proven, once; nothing else but the voters' keys is there."""
    seen: set[int] = set()
    for e in events:
        if e.seq in seen:
            raise BundleInvalid(f"event {e.seq}", "it is in the bundle twice")
        seen.add(e.seq)
    for seq in bundle.selection.seqs:
        if seq not in seen:
            raise BundleInvalid(f"event {seq}", "the selection lists it, but the bundle has no proof of it")
    claimed = set(bundle.selection.seqs)
    for e in events:
        if e.role == "selected" and e.seq not in claimed:
            raise BundleInvalid(f"event {e.seq}", "it is in the bundle but not in the selection")
        if e.role == "voter-key" and e.fields["type"] not in ("person_key_registered", "person_key_revoked"):
            raise BundleInvalid(f"event {e.seq}", f"a voter-key event is a {e.fields['type']}")


def _every_approval_has_its_vote(bundle: Bundle, events: list[ProvenEvent]) -> None:
    voted = {v.seq for v in bundle.votes}
    for e in events:
        if e.fields["type"] == "approval_recorded" and e.seq not in voted:
            raise BundleInvalid(f"event {e.seq}", "an approval without its vote's signature status")


def _vote(vote: BundleVote, events: dict[int, ProvenEvent]) -> dict:
    """Recompute a vote's signature status from the bundle's proven events; the bundle's status must agree."""
    name = f"the vote of event {vote.seq}"
    approval = events.get(vote.seq)
    if approval is None or approval.fields["type"] != "approval_recorded":
        raise BundleInvalid(name, "the bundle has no proven approval_recorded event with that seq")
    p = approval.payload
    shown = {"subject": vote.subject, "person": vote.person, "decision": vote.decision, "on": vote.on,
             "key_id": vote.key_id, "content_sha256": vote.content_sha256}
    derived = {"subject": p["subject"], "person": p["person"], "decision": p["decision"],
               "on": approval.fields["effective_date"], "key_id": p.get("key_id"),
               "content_sha256": p.get("content_sha256")}
    for key, value in derived.items():
        if shown[key] != value:
            raise BundleInvalid(name, f"its {key} is not the approval event's")
    status, detail = _signature_status(vote, p, approval.fields["effective_date"], events)
    if status != vote.status:
        raise BundleInvalid(name, f"the bundle says {vote.status}, but it is {status}: {detail}")
    return derived | {"seq": vote.seq, "status": status, "detail": detail}


def _signature_status(vote: BundleVote, p: dict, on: str, events: dict[int, ProvenEvent]) -> tuple[str, str]:
    """unsigned / signed-valid / signed-invalid, and why, from the bundle alone."""
    if p.get("signature") is None:
        return vote_signing.UNSIGNED, "not signed"
    key_event = events.get(vote.key_seq) if vote.key_seq is not None else None
    if key_event is None or key_event.fields["type"] != "person_key_registered":
        return vote_signing.SIGNED_INVALID, "the key's registration is not proven in the bundle"
    reg = key_event.payload
    try:
        key = parse_vkey(reg["public_key"])
    except GpufleetError:
        return vote_signing.SIGNED_INVALID, "the registered key does not parse"
    if reg["person"] != p["person"] or key.key_id.hex() != p.get("key_id"):
        return vote_signing.SIGNED_INVALID, f"event {vote.key_seq} registers another person's or another key"
    message = vote_signing.registration_message(reg["person"], reg["entity"], reg["public_key"])
    if not vote_signing.verifies(key, message, reg["proof"]):
        return vote_signing.SIGNED_INVALID, f"event {vote.key_seq}'s proof of possession does not verify"
    if key_event.fields["effective_date"] > on or _revoked(events, p["person"], p["key_id"], on):
        return vote_signing.SIGNED_INVALID, f"key {p['key_id']} was not active on {on}"
    signed = vote_signing.vote_message(p["subject"], p["decision"], p["person"], p.get("content_sha256") or "")
    if not vote_signing.verifies(key, signed, p["signature"]):
        return vote_signing.SIGNED_INVALID, f"the signature does not verify with key {p['key_id']}"
    terms_hash = None if vote.terms is None else vote_signing.content_sha256(vote.terms)
    if terms_hash != p.get("content_sha256") or (vote.terms or {}).get("subject") != p["subject"]:
        return vote_signing.SIGNED_INVALID, (f"the terms in the bundle hash to {terms_hash}, not to the "
                                             f"content_sha256 signed ({p.get('content_sha256')})")
    return vote_signing.SIGNED_VALID, f"signed with {key.label} over the terms shown (content {terms_hash})"


def _revoked(events: dict[int, ProvenEvent], person: str, key_id: str, on: str) -> bool:
    return any(e.fields["type"] == "person_key_revoked" and e.payload["person"] == person
               and e.payload["key_id"] == key_id and e.fields["effective_date"] <= on for e in events.values())


def _consistency(bundle: Bundle, checkpoint: Checkpoint, verifiers, policy, previous: str | None) -> dict | None:
    """The bundle's consistency proof (when it has one) from its earlier checkpoint, which must be the
    reader's ``previous`` when given."""
    item = bundle.consistency
    if item is None:
        if previous is not None:
            raise BundleInvalid("the consistency proof", "you gave a previous checkpoint, but the bundle has no "
                                "consistency proof: disclose again with --previous")
        return None
    old, _, _ = _open(item.previous_checkpoint, verifiers, policy, "the previous checkpoint's signatures")
    if previous is not None:
        mine, _, _ = _open(previous, verifiers, policy, "your previous checkpoint's signatures")
        if (mine.tree_size, mine.root_hash) != (old.tree_size, old.root_hash):
            raise BundleInvalid("the consistency proof", f"it starts from a checkpoint of size {old.tree_size} "
                                f"(root {old.root_hash.hex()[:16]}...), not from yours of size {mine.tree_size} "
                                f"(root {mine.root_hash.hex()[:16]}...)")
    if old.origin != checkpoint.origin:
        raise BundleInvalid("the consistency proof", f"the previous checkpoint's origin is {old.origin!r}, "
                                                     f"not {checkpoint.origin!r}")
    if (item.old_size, item.new_size) != (old.tree_size, checkpoint.tree_size):
        raise BundleInvalid("the consistency proof", f"it is between sizes {item.old_size} and {item.new_size}, "
                                                     f"not {old.tree_size} and {checkpoint.tree_size}")
    problem = merkle.consistency_problem(old.tree_size, checkpoint.tree_size,
                                         [bytes.fromhex(h) for h in item.proof], old.root_hash, checkpoint.root_hash)
    if problem is not None:
        raise BundleInvalid("the consistency proof", f"the tree of size {old.tree_size} is not proven a prefix of "
                                                     f"the tree of size {checkpoint.tree_size}: {problem}")
    return {"old_size": old.tree_size, "new_size": checkpoint.tree_size, "old_root": old.root_hash.hex(),
            "new_root": checkpoint.root_hash.hex()}
