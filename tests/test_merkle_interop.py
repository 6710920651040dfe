"""The ledger's Merkle roots and proofs checked by two independent implementations from PyPI (docs/disclosure.md):

* ``pymerkle`` (RFC 9162 hashing: its default ``security`` mode prefixes 0x00 to leaves and 0x01 to nodes)
  builds its own tree over the events' canonical bytes: its root of every size must be the ledger's, and
  its verifier must accept the ledger's audit paths (wrapped in its proof format, whose structure it
  recomputes from the index and size) and refuse altered ones.
* ``tlog-scales`` verifies inclusion and consistency proofs with its line-by-line port of RFC 9162
  §2.1.3.2 and §2.1.4.2: every proof of the ledger must pass, an altered one must not.
"""

from __future__ import annotations

from datetime import date

import pymerkle
import pytest
from sqlalchemy import text
from tlog_scales.tlog import ConsistencyProof, ConsistencyProofInvalid, InclusionProof, InclusionProofInvalid

from gpufleet.domain import events as ev
from gpufleet.domain.chain import canonical_bytes
from gpufleet.ledger import merkle_store
from gpufleet.ledger.store import Draft
from test_ledger import append, story

SIZE = 45  # events: trees of every shape up to 45 leaves


@pytest.fixture
def ledger(engine):
    """A ledger of 45 events (the test story, then entities, in batches of several sizes), its connection,
    and the canonical bytes of each event."""
    drafts = story().drafts() + [Draft(ev.EntityRegistered(entity=f"e{i}", name=f"E{i}"), date(2024, 6, 1), "t")
                                 for i in range(SIZE - len(story().drafts()))]
    for start, end in [(0, 1), (1, 6), (6, 7), (7, 30), (30, SIZE)]:
        append(engine, drafts[start:end])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, "
                                 "payload FROM events ORDER BY seq")).all()
        yield conn, [canonical_bytes(*r) for r in rows]


def flipped(proof: list[bytes], i: int) -> list[bytes]:
    return [*proof[:i], bytes([proof[i][0] ^ 1]) + proof[i][1:], *proof[i + 1:]]


def test_pymerkle_builds_the_same_roots_and_accepts_the_audit_paths(ledger):
    conn, data = ledger
    tree = pymerkle.InmemoryTree(algorithm="sha256")  # security mode (RFC 9162 prefixes) is the default
    for d in data:
        tree.append_entry(d)
    for size in range(1, SIZE + 1):
        root = merkle_store.root_hash(conn, size)
        assert tree.get_root(size) == root
        for seq in range(1, size + 1):
            proof = merkle_store.inclusion(conn, seq, size)
            theirs = tree.prove_inclusion(seq, size)  # pymerkle counts leaves from 1
            assert theirs.path == [proof.leaf_hash, *proof.audit_path]
            ours = pymerkle.InclusionProof("sha256", True, size, seq, theirs.rule, [proof.leaf_hash, *proof.audit_path])
            pymerkle.verify_inclusion(proof.leaf_hash, root, ours, index=seq, size=size)
            for i in range(len(proof.audit_path)):
                bad = pymerkle.InclusionProof("sha256", True, size, seq, theirs.rule,
                                              [proof.leaf_hash, *flipped(proof.audit_path, i)])
                with pytest.raises(pymerkle.InvalidProof):
                    pymerkle.verify_inclusion(proof.leaf_hash, root, bad, index=seq, size=size)


def test_tlog_scales_verifies_every_inclusion_and_consistency_proof(ledger):
    conn, _ = ledger
    roots = [merkle_store.root_hash(conn, n) for n in range(SIZE + 1)]
    checked = 0
    for size in range(1, SIZE + 1):
        for seq in range(1, size + 1):
            proof = merkle_store.inclusion(conn, seq, size)
            InclusionProof(seq - 1, size, proof.audit_path).check(proof.leaf_hash, roots[size])
            for i in range(len(proof.audit_path)):
                with pytest.raises(InclusionProofInvalid):
                    InclusionProof(seq - 1, size, flipped(proof.audit_path, i)).check(proof.leaf_hash, roots[size])
        for old in range(0, size + 1):
            path = merkle_store.consistency_proof(conn, old, size)
            ConsistencyProof(old, size, path).check(roots[old], roots[size])
            checked += 1
            for i in range(len(path)):
                with pytest.raises(ConsistencyProofInvalid):
                    ConsistencyProof(old, size, flipped(path, i)).check(roots[old], roots[size])
            if path:
                with pytest.raises(ConsistencyProofInvalid):
                    ConsistencyProof(old, size, path[:-1]).check(roots[old], roots[size])
    assert checked == (SIZE + 1) * (SIZE + 2) // 2 - 1
