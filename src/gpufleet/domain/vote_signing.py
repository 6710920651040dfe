"""Signed votes (pure): a person's registered key, the content hash of a transaction's terms, and the
signature a voter makes over them on their own machine (docs/disclosure.md, "Signed votes").

* **Registration.** ``person_key_registered`` carries the person's signed-note verifier key and a
  *proof of possession*: the key's Ed25519 signature of :func:`registration_message` (naming the
  person, the entity and the key), so nobody registers a key they do not hold.
* **Terms.** :func:`transaction_terms` is the one place the terms of a transaction awaiting votes are
  written down: subject, kind, parties, date, GPUs, model, site, start, end, fee, value, the value of
  its series and ``policy_sha256`` (the governance policy's hash). Every number is a decimal string, so
  any language hashes the same bytes: :func:`canonical` (sorted keys, no spaces, UTF-8) and
  :func:`content_sha256`. The API, the CLI, the audit and the ledger's gate all call these.
* **The vote.** :func:`vote_message` is ``gpufleet vote v1`` and the subject, the decision, the person
  and the content hash, one per line: an approval cannot be replayed as a rejection, nor as another
  person's vote, nor on other terms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from gpufleet.domain import events as ev
from gpufleet.domain.notes import ALG_ED25519, VerifierKey, parse_vkey
from gpufleet.errors import ConflictError, GpufleetError, InvariantViolation

if TYPE_CHECKING:
    from gpufleet.domain.governance import GovernancePolicy, Transaction
    from gpufleet.domain.state import Approval, FleetState, PersonKey

VOTE_CONTEXT = "gpufleet vote v1"
REGISTRATION_CONTEXT = "gpufleet key registration v1"
UNSIGNED, SIGNED_VALID, SIGNED_INVALID = "unsigned", "signed-valid", "signed-invalid"
# The events that create a transaction, and the field that names it: their first sequence numbers order
# the transactions of one date within a series (as ``services.governance.recording_order`` does).
CREATORS = {"delivery_slot_swap": ("swap", "swap"), "loan_opened": ("loan", "loan"),
            "loan_proposed": ("proposal", "loan")}


# -- messages ----------------------------------------------------------------------------------


def registration_message(person: str, entity: str, public_key: str) -> bytes:
    """What a key signs to prove its holder registers it for ``person`` in ``entity``."""
    return f"{REGISTRATION_CONTEXT}\n{person}\n{entity}\n{public_key}\n".encode()


def vote_message(subject: str, decision: str, person: str, content_sha256: str) -> bytes:
    """What a voter signs: the subject, the decision, the person and the hash of the terms."""
    return f"{VOTE_CONTEXT}\n{subject}\n{decision}\n{person}\n{content_sha256}\n".encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def verifies(key: VerifierKey, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``key``'s Ed25519 signature of ``message``."""
    raw = _unb64(signature)
    return raw is not None and key.verify(message, raw)


# -- terms and their hash ----------------------------------------------------------------------


def canonical(value: object) -> bytes:
    """Canonical JSON: keys sorted, no spaces, UTF-8 (not escaped)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def policy_sha256(policy: GovernancePolicy) -> str:
    """SHA-256 of the governance policy's canonical JSON (every field, defaults included)."""
    return sha256_hex(canonical(policy.model_dump(mode="json")))


def content_sha256(terms: Mapping[str, object]) -> str:
    """The content hash a voter signs: SHA-256 of the terms' canonical JSON."""
    return sha256_hex(canonical(dict(terms)))


def _usd(value: float) -> str:
    return f"{value:.2f}"


def _fee(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def transaction_terms(state: FleetState, t: Transaction, policy: GovernancePolicy) -> dict[str, object]:
    """The terms of ``t`` as a voter approves them (see the module's docstring)."""
    terms: dict[str, object] = {
        "subject": t.subject, "kind": t.kind, "giver": t.giver, "receiver": t.receiver, "on": t.on.isoformat(),
        "gpus": None, "model": None, "site": None, "start": None, "end": None, "lots_given": None,
        "lots_received": None, "fee_usd_per_gpu_hour": _fee(t.fee_usd_per_gpu_hour),
        "value_usd": _usd(t.value_usd), "series_usd": _usd(t.series_usd), "policy_sha256": policy_sha256(policy)}
    if t.kind == "loan_proposal":
        p = state.proposals[f"loan:{t.id}"]
        terms |= {"gpus": p.gpus, "model": p.model, "site": p.site, "start": _day(p.start), "end": _day(p.end_date)}
    elif t.kind == "loan":
        loan = state.loans[t.id]
        terms |= {"gpus": loan.gpus_opened, "model": loan.model, "site": loan.site, "start": _day(loan.start),
                  "end": _day(loan.end_date)}
    elif t.kind == "slot_swap":
        s = state.swaps[t.id]
        terms |= {"gpus": s.gpus, "model": s.model, "start": _day(s.on), "lots_given": list(s.lots_a),
                  "lots_received": list(s.lots_b)}
    return terms


def find_transaction(state: FleetState, policy: GovernancePolicy, subject: str, on: date,
                     order: Mapping[str, int] | None = None) -> Transaction | None:
    """The transaction ``subject`` names, with its series, as the approvals list values it; None if none."""
    from gpufleet.domain.governance import transactions  # governance imports the state, which imports us

    return next((t for t in transactions(state, policy, on, order) if t.subject == subject), None)


def terms_of(state: FleetState, policy: GovernancePolicy, subject: str, on: date,
             order: Mapping[str, int] | None = None) -> dict[str, object] | None:
    """:func:`transaction_terms` of the transaction ``subject`` names; None if the ledger has none."""
    t = find_transaction(state, policy, subject, on, order)
    return None if t is None else transaction_terms(state, t, policy)


def changed_fields(signed: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    """The terms that differ between what was signed and what the ledger says now."""
    return sorted(k for k in set(signed) | set(now) if signed.get(k) != now.get(k))


def recording_order(created: Iterable[tuple[int, str, str]]) -> dict[str, int]:
    """Each transaction's first sequence number, from (seq, event type, payload JSON) of the events of
    :data:`CREATORS`: it orders the transactions of one date within a series."""
    found: dict[str, int] = {}
    for seq, event_type, payload in created:
        if event_type in CREATORS:
            prefix, field_name = CREATORS[event_type]
            found.setdefault(f"{prefix}:{json.loads(payload)[field_name]}", seq)
    return found


# -- keys --------------------------------------------------------------------------------------


def key_record(state: FleetState, person: str, key_id: str) -> PersonKey | None:
    return state.person_keys.get(f"{person}/{key_id}")


def check_registration(state: FleetState, p: ev.PersonKeyRegistered) -> VerifierKey:
    """Refuse a registration whose person holds no role in the entity, whose key does not parse, whose
    proof does not verify, or whose key the person already registered; answer the key."""
    if not any(who == p.person and entity == p.entity for who, entity, *_rest in state.roles | state.access):
        raise InvariantViolation(f"'{p.person}' holds no role in '{p.entity}'; a key is registered by an admin "
                                 "of an entity the person holds a role in", field="entity")
    try:
        key = parse_vkey(p.public_key)
    except GpufleetError as exc:
        raise InvariantViolation(f"not a signed-note verifier key: {exc.message}", field="public_key") from None
    if key.algorithm != ALG_ED25519:
        raise InvariantViolation(f"{key.label} is a cosigner key (type 0x{key.algorithm:02x}); votes are signed with "
                                 "a signed-note Ed25519 key (type 0x01: `gpufleet keys generate`)", field="public_key")
    if not verifies(key, registration_message(p.person, p.entity, p.public_key), p.proof):
        raise InvariantViolation(f"the proof is not {key.label}'s signature of the registration of '{p.person}' in "
                                 f"'{p.entity}': it must be made with the private key being registered",
                                 field="proof")
    known = key_record(state, p.person, key.key_id.hex())
    if known is not None:
        when = f"revoked on {known.revoked_on}" if known.revoked_on else "active"
        raise InvariantViolation(f"'{p.person}' already registered the key {key.label} on {known.registered_on} "
                                 f"({when}); a key is registered once", field="public_key")
    return key


def check_signature(state: FleetState, p: ev.ApprovalRecorded, on: date) -> None:
    """Refuse a signed vote whose key is not the person's, not active on ``on``, or whose signature
    does not verify over the vote message (the subject, decision, person and content hash)."""
    if p.signature is None:
        return
    record = key_record(state, p.person, p.key_id or "")
    if record is None:
        raise InvariantViolation(f"'{p.person}' has no registered key {p.key_id}", field="key_id")
    if not record.active_on(on):
        raise InvariantViolation(f"{p.person}'s key {p.key_id} was revoked on {record.revoked_on} "
                                 f"({record.reason or 'no reason given'}); it cannot sign a vote of {on}",
                                 field="key_id")
    message = vote_message(p.subject, p.decision.value, p.person, p.content_sha256 or "")
    if not verifies(parse_vkey(record.public_key), message, p.signature):
        raise InvariantViolation(f"the signature is not {p.person}'s key {p.key_id} over this vote ({p.decision.value} "
                                 f"{p.subject} by {p.person}, content {p.content_sha256})", field="signature")


def check_vote(state: FleetState, p: ev.ApprovalRecorded, policy: GovernancePolicy, on: date,
               after_the_fact: bool = False, order: Callable[[], Mapping[str, int]] | None = None) -> None:
    """The ledger's gate for a vote: a signed vote names the terms the ledger has now (else
    :class:`ConflictError` "the terms changed since you signed"); an unsigned one is refused when the
    policy requires signed votes (history recorded ``after_the_fact`` excepted). ``order`` gives the
    transactions' recording order (only read for a loan or swap, whose series it can change)."""
    if p.signature is None:
        if policy.require_signed_votes and not after_the_fact:
            raise InvariantViolation("the governance policy requires signed votes: sign it with your registered key "
                                     "(gpufleet approvals approve|reject|waive SUBJECT --sign-with KEYFILE)",
                                     field="signature")
        return
    ranks = order() if order is not None and not p.subject.startswith("proposal:") else None
    terms = terms_of(state, policy, p.subject, on, ranks)
    if terms is None:
        return  # no such transaction: the vote's own check says so
    now = content_sha256(terms)
    if p.content_sha256 != now:
        raise ConflictError(f"the terms changed since you signed: {p.subject}'s terms now hash to {now}; read them "
                            "again and sign what they are now", field="content_sha256")


# -- the audit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteSignature:
    """A vote's signature as the ledger shows it: ``status`` unsigned, signed-valid or signed-invalid, and
    why; ``terms_match``: whether the terms signed are the ledger's terms (None: unsigned)."""

    status: str
    detail: str
    key_id: str | None = None
    terms_match: bool | None = None


def vote_signature_status(state: FleetState, approval: Approval, terms: Mapping[str, object] | None) -> VoteSignature:
    """Recompute a vote's signature from the ledger: the key was the person's and active on the vote's
    date, the signature verifies over the vote message, and the content hash signed is the hash of
    ``terms`` (the transaction's terms recomputed from the ledger and the policy)."""
    if approval.signature is None:
        return VoteSignature(UNSIGNED, "not signed")
    key_id = approval.key_id
    record = key_record(state, approval.person, key_id or "")
    if record is None:
        return VoteSignature(SIGNED_INVALID, f"{approval.person} has no registered key {key_id}", key_id)
    if not record.active_on(approval.on):
        return VoteSignature(SIGNED_INVALID, f"key {key_id} was not active on {approval.on} (registered "
                             f"{record.registered_on}, revoked {record.revoked_on})", key_id)
    message = vote_message(approval.subject, approval.decision, approval.person, approval.content_sha256 or "")
    if not verifies(parse_vkey(record.public_key), message, approval.signature):
        return VoteSignature(SIGNED_INVALID, f"the signature does not verify with key {key_id}", key_id)
    now = None if terms is None else content_sha256(terms)
    if now != approval.content_sha256:
        return VoteSignature(SIGNED_INVALID, f"signed over other terms: content {approval.content_sha256}, the "
                             f"ledger's terms now hash to {now}", key_id, False)
    return VoteSignature(SIGNED_VALID, f"signed with key {key_id} ({parse_vkey(record.public_key).label}), "
                         "over the ledger's terms", key_id, True)
