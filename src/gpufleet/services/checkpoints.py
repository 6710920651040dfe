"""Signed checkpoints of the ledger's Merkle tree (C2SP tlog-checkpoint), recorded and cosigned.

A checkpoint's body is stored once per tree size (``checkpoints``); each signature line is a row of
``checkpoint_signatures``, so cosigners add theirs to an append-only record. The note is the body, a
blank line and the lines in the order they were added. Creating one locks the ledger's head as an
append does, so the size, the root and the chain head it names are one consistent state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select

from gpufleet.domain import chain
from gpufleet.domain.notes import add_signature as add_line
from gpufleet.domain.notes import (
    ALG_COSIGNATURE_V1, ALG_ED25519, Checkpoint, Note, SignaturePolicy, SignerKey, VerifierKey,
    gpufleet_extensions, open_checkpoint, open_note, parse_checkpoint, parse_signature_line, signature_line,
    verify_with_policy,
)
from gpufleet.errors import ConflictError, InputError, LedgerCorrupt, UnknownReference
from gpufleet.ledger.schema import checkpoint_signatures, checkpoints, events
from gpufleet.ledger.store import Ledger


class CheckpointNotFound(UnknownReference):
    """No checkpoint is recorded at that tree size."""


@dataclass(frozen=True)
class RecordedCheckpoint:
    """A recorded checkpoint: its body, when it was created, and its signature lines in the order added."""

    checkpoint: Checkpoint
    created_at: str
    lines: tuple[str, ...]

    @property
    def note(self) -> str:
        """The signed note (C2SP form): the body, a blank line, the signature lines."""
        return self.checkpoint.body + "\n" + "".join(self.lines)

    def summary(self) -> dict:
        """The listing's row: size, origin, root (hex), created, and who signed (``name+keyid``)."""
        signers = [parse_signature_line(line.removesuffix("\n")).label for line in self.lines]
        return {"tree_size": self.checkpoint.tree_size, "origin": self.checkpoint.origin,
                "root_hash": self.checkpoint.root_hash.hex(), "created_at": self.created_at, "signers": signers}


def _engine(source) -> Engine | Connection:
    """An engine (from a service or an engine) or a connection whose transaction the caller owns."""
    return getattr(source, "engine", source)


class _Tx:
    """``with _Tx(source) as conn``: a new transaction on an engine, or the caller's connection as is."""

    def __init__(self, source, write: bool = True):
        self.source, self.write, self.context = _engine(source), write, None

    def __enter__(self) -> Connection:
        if isinstance(self.source, Connection):
            return self.source
        self.context = self.source.begin() if self.write else self.source.connect()
        return self.context.__enter__()

    def __exit__(self, *exc) -> None:
        if self.context is not None:
            self.context.__exit__(*exc)


def root_hash(conn: Connection, size: int) -> bytes:
    """The RFC 9162 root of the tree over events 1..size (the ledger's Merkle store)."""
    from gpufleet.ledger import merkle_store

    return merkle_store.root_hash(conn, size)


def _now(now: datetime | None) -> str:
    return chain.format_instant(now or datetime.now(UTC))


# -- reading -------------------------------------------------------------------------------------------


def _load(conn: Connection, size: int) -> RecordedCheckpoint | None:
    row = conn.execute(select(checkpoints).where(checkpoints.c.tree_size == size)).first()
    if row is None:
        return None
    lines = conn.execute(select(checkpoint_signatures.c.line).where(checkpoint_signatures.c.tree_size == size)
                         .order_by(checkpoint_signatures.c.added_at, checkpoint_signatures.c.key_name,
                                   checkpoint_signatures.c.key_id)).scalars().all()
    return RecordedCheckpoint(parse_checkpoint(row.body), row.created_at, tuple(lines))


def get(source, size: int) -> RecordedCheckpoint:
    """The checkpoint recorded at ``size``; :class:`CheckpointNotFound` when there is none."""
    with _Tx(source, write=False) as conn:
        found = _load(conn, size)
    if found is None:
        raise CheckpointNotFound(f"no checkpoint is recorded at tree size {size}", field="size")
    return found


def latest(source) -> RecordedCheckpoint | None:
    """The checkpoint of the largest tree size recorded, or None."""
    with _Tx(source, write=False) as conn:
        size = conn.execute(select(checkpoints.c.tree_size).order_by(checkpoints.c.tree_size.desc())
                            .limit(1)).scalar()
        return None if size is None else _load(conn, size)


def note_text(source, size: int | None = None) -> str:
    """The signed note of the checkpoint at ``size`` (None: the latest)."""
    if size is None:
        found = latest(source)
        if found is None:
            raise CheckpointNotFound("no checkpoint is recorded yet: run `gpufleet checkpoint create`", field="size")
        return found.note
    return get(source, size).note


def list_checkpoints(source, limit: int = 1000) -> list[dict]:
    """The recorded checkpoints, newest first, as summaries."""
    with _Tx(source, write=False) as conn:
        sizes = conn.execute(select(checkpoints.c.tree_size).order_by(checkpoints.c.tree_size.desc())
                             .limit(limit)).scalars().all()
        return [_load(conn, size).summary() for size in sizes]


# -- creating ------------------------------------------------------------------------------------------


def create_checkpoint(source, signer: SignerKey, origin: str | None = None,
                      now: datetime | None = None) -> RecordedCheckpoint:
    """Sign and record a checkpoint of the ledger at its current head, in one transaction that locks
    the head as appends do. ``origin`` defaults to the key's name and must stay the ledger's origin.
    At a size already recorded, the same body gets this key's signature line (if it lacks it)."""
    if signer.algorithm != ALG_ED25519:
        raise InputError(f"the key {signer.name} is a cosigner key (type 0x04); a log signs with a note key",
                         field="key")
    with _Tx(source) as conn:
        head = Ledger(conn).head(lock=True)
        origin = origin or signer.name
        previous = _previous(conn, head.seq)
        if previous is not None and previous.checkpoint.origin != origin:
            raise ConflictError(f"this ledger's checkpoints have origin {previous.checkpoint.origin!r}, "
                                f"not {origin!r}", field="origin")
        if previous is not None:
            _check_still_consistent(conn, previous.checkpoint)
        recorded = head.recorded_at if head.seq else None
        checkpoint = Checkpoint(origin, head.seq, root_hash(conn, head.seq),
                                gpufleet_extensions(recorded, head.seq, head.hash))
        at = _now(now)
        existing = _load(conn, head.seq)
        if existing is None:
            conn.execute(insert(checkpoints).values(tree_size=head.seq, origin=origin,
                                                    root_hash=checkpoint.root_hash.hex(), body=checkpoint.body,
                                                    created_at=at))
        elif existing.checkpoint != checkpoint:
            raise ConflictError(f"the checkpoint recorded at size {head.seq} has another body (origin "
                                f"{existing.checkpoint.origin!r}); it is not signed again", field="origin")
        _insert_line(conn, head.seq, signature_line(checkpoint.body, signer), at)
        return _load(conn, head.seq)


def _previous(conn: Connection, size: int) -> RecordedCheckpoint | None:
    """The checkpoint of the largest size at most ``size``."""
    found = conn.execute(select(checkpoints.c.tree_size).where(checkpoints.c.tree_size <= size)
                         .order_by(checkpoints.c.tree_size.desc()).limit(1)).scalar()
    return None if found is None else _load(conn, found)


def _check_still_consistent(conn: Connection, checkpoint: Checkpoint) -> None:
    """A log never signs a tree inconsistent with one it signed: the tree at an earlier checkpoint's size
    must still have that checkpoint's root (else the events under it were rewritten)."""
    if root_hash(conn, checkpoint.tree_size) != checkpoint.root_hash:
        raise LedgerCorrupt(f"the ledger's Merkle tree at size {checkpoint.tree_size} no longer has the root "
                            f"that checkpoint signed: events 1..{checkpoint.tree_size} were changed; nothing "
                            f"is signed (run `gpufleet ledger verify`)", seq=checkpoint.tree_size)


def _insert_line(conn: Connection, size: int, line: str, at: str) -> bool:
    """Record signature ``line`` at ``size`` unless that key (name and ID) already signed; True if added."""
    sig = parse_signature_line(line.removesuffix("\n"))
    if len(sig.name) > 200:
        raise InputError("a key name of more than 200 characters is not recorded", field="signature")
    have = conn.execute(select(checkpoint_signatures.c.line).where(
        checkpoint_signatures.c.tree_size == size, checkpoint_signatures.c.key_name == sig.name,
        checkpoint_signatures.c.key_id == sig.key_id.hex())).scalar()
    if have is not None:
        return False
    conn.execute(insert(checkpoint_signatures).values(tree_size=size, key_name=sig.name, key_id=sig.key_id.hex(),
                                                      line=sig.line, added_at=at))
    return True


# -- checking against the ledger, cosigning --------------------------------------------------------------


def check_against_ledger(conn: Connection, checkpoint: Checkpoint) -> None:
    """The checkpoint describes this ledger: its root is the tree's at its size, and its extension lines
    (when present) name event ``tree_size``'s hash and recorded time. :class:`LedgerCorrupt` otherwise."""
    size = checkpoint.tree_size
    head = Ledger(conn).head()
    if size > head.seq:
        raise LedgerCorrupt(f"the checkpoint is of size {size}, but the ledger has {head.seq} events", seq=size)
    if root_hash(conn, size) != checkpoint.root_hash:
        raise LedgerCorrupt(f"the ledger's Merkle root at size {size} is not the checkpoint's", seq=size)
    event = conn.execute(select(events.c.hash, events.c.recorded_at).where(events.c.seq == size)).first()
    chain_head = checkpoint.chain_head
    if chain_head is not None and size and (event is None or event.hash != chain_head[1]):
        raise LedgerCorrupt(f"event {size}'s hash is not the checkpoint's gpufleet-chain hash", seq=size)
    if chain_head is not None and not size and chain_head[1] != chain.GENESIS_HASH:
        raise LedgerCorrupt("an empty ledger's gpufleet-chain hash is 64 zeros", seq=0)
    recorded = checkpoint.recorded_at
    if recorded is not None and (event is None or event.recorded_at != recorded):
        raise LedgerCorrupt(f"event {size} was not recorded at the checkpoint's gpufleet-recorded time", seq=size)


def add_signature(source, size: int, line: str, verifier: VerifierKey,
                  log_key: VerifierKey | None = None) -> tuple[RecordedCheckpoint, bool]:
    """Record a cosigner's signature ``line`` on the checkpoint at ``size``: it must verify with
    ``verifier`` over the recorded body, and the note must verify with ``log_key`` when given.
    Returns the checkpoint and whether the line was new (a key's second line is not recorded)."""
    with _Tx(source) as conn:
        found = _load(conn, size)
        if found is None:
            raise CheckpointNotFound(f"no checkpoint is recorded at tree size {size}", field="size")
        if log_key is not None:
            open_note(found.note, [log_key])
        _verify_line(found.checkpoint.body, line, verifier)
        check_against_ledger(conn, found.checkpoint)
        _check_cosigner_history(conn, found.checkpoint, verifier)
        added = _insert_line(conn, size, line, _now(None))  # when recorded: the lines' order
        return _load(conn, size), added


def _verify_line(body: str, line: str, verifier: VerifierKey) -> Note:
    """The line must be ``verifier``'s signature of ``body`` (any other key's line is refused)."""
    line = line if line.endswith("\n") else line + "\n"
    if "\n" in line[:-1]:
        raise InputError("give one signature line", field="signature")
    sig = parse_signature_line(line[:-1])
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise InputError(f"the line is signed by {sig.label}, not by the key given ({verifier.label})",
                         field="signature")
    return open_note(body + "\n" + line, [verifier])


def _check_cosigner_history(conn: Connection, checkpoint: Checkpoint, key: VerifierKey) -> None:
    """A cosigner's checkpoints grow: one it signed earlier must be consistent with this one (same
    root at its size, by the ledger's tree); a cosignature/v1 key never signs a smaller tree after a larger."""
    sizes = conn.execute(select(checkpoint_signatures.c.tree_size).where(
        checkpoint_signatures.c.key_name == key.name, checkpoint_signatures.c.key_id == key.key_id.hex())
    ).scalars().all()
    larger = [s for s in sizes if s > checkpoint.tree_size]
    if larger and key.algorithm == ALG_COSIGNATURE_V1:
        raise ConflictError(f"{key.label} already cosigned the larger tree of size {max(larger)}; a cosignature/v1 "
                            f"states the largest tree seen, so size {checkpoint.tree_size} is not cosigned",
                            field="size")
    smaller = [s for s in sizes if s < checkpoint.tree_size]
    if smaller:
        earlier = _load(conn, max(smaller)).checkpoint
        _check_consistency(conn, earlier, checkpoint)


def _check_consistency(conn: Connection, old: Checkpoint, new: Checkpoint) -> None:
    """``new`` extends ``old``: an RFC 9162 consistency proof from the ledger's tree verifies between them."""
    from gpufleet.domain import merkle
    from gpufleet.ledger import merkle_store

    proof = merkle_store.consistency_proof(conn, old.tree_size, new.tree_size)
    if not merkle.verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash):
        raise LedgerCorrupt(f"the checkpoint of size {new.tree_size} is not consistent with the one of size "
                            f"{old.tree_size} this key signed", seq=old.tree_size)


def cosign(source, size: int | None, signer: SignerKey, log_key: VerifierKey,
           now: datetime | None = None) -> tuple[RecordedCheckpoint, bool]:
    """Cosign the recorded checkpoint at ``size`` (None: the latest) with ``signer``, after checking the
    log's signature with ``log_key``, the checkpoint against the ledger and consistency with the last
    checkpoint this key signed. A cosigner key (type 0x04) signs cosignature/v1 with the time now."""
    recorded = get(source, size) if size is not None else latest(source)
    if recorded is None:
        raise CheckpointNotFound("no checkpoint is recorded yet", field="size")
    open_note(recorded.note, [log_key])
    line = signature_line(recorded.checkpoint.body, signer, _timestamp(now))
    return add_signature(source, recorded.checkpoint.tree_size, line, signer.vkey, log_key)


def _timestamp(now: datetime | None) -> int:
    return int(now.timestamp()) if now is not None else int(time.time())


def cosign_note(note: str, signer: SignerKey, log_key: VerifierKey, now: datetime | None = None) -> str:
    """Cosign a checkpoint note offline (no database): verify it with ``log_key``, then add the line."""
    checkpoint, _ = open_checkpoint(note, [log_key])
    return add_line(note, signature_line(checkpoint.body, signer, _timestamp(now)))


# -- offline verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What a verification found: the checkpoint, the signatures that verified, those by unknown keys,
    and (with a policy) the ones that satisfied it."""

    checkpoint: Checkpoint
    note: Note
    satisfied: tuple = ()

    def as_dict(self) -> dict:
        cp = self.checkpoint
        return {"origin": cp.origin, "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
                "extensions": list(cp.extensions), "chain_head": list(cp.chain_head) if cp.chain_head else None,
                "recorded_at": cp.recorded_at,
                "verified": [_sig_dict(s) for s in self.note.signatures],
                "unverified": [_sig_dict(s) for s in self.note.unverified],
                "policy_satisfied_by": [s.label for s in self.satisfied]}


def _sig_dict(sig) -> dict:
    return {"key": sig.label, "timestamp": sig.timestamp}


def verify_checkpoint(note: str | bytes, verifiers: list[VerifierKey], policy: SignaturePolicy | None = None,
                      origin: str | None = None) -> Verified:
    """Verify a signed checkpoint offline, with no database: with the ``verifiers`` (at least one must
    have signed; a known key's bad signature fails) and, when given, the ``policy`` (its keys join them)."""
    if policy is not None:
        merged = SignaturePolicy.model_validate(
            policy.model_dump() | {"keys": [*policy.keys, *(k.text for k in verifiers if k.text not in policy.keys)],
                                   "origin": origin or policy.origin})
        checkpoint, opened, satisfied = verify_with_policy(note, merged)
        return Verified(checkpoint, opened, satisfied)
    if not verifiers:
        raise InputError("give at least one verifier key (--key) or a policy", field="key")
    checkpoint, opened = open_checkpoint(note, verifiers, origin)
    return Verified(checkpoint, opened)
