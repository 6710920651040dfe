"""The ledger's Merkle tree (RFC 9162): known answers, properties of proofs and verifiers, the tree kept by
appends on SQLite and PostgreSQL, the migration's backfill, and verify finding an edited node."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

import tampering
from builders import Story
from gpufleet.domain import events as ev
from gpufleet.domain import merkle
from gpufleet.domain.chain import canonical_bytes
from gpufleet.errors import InputError, LedgerCorrupt
from gpufleet.ledger import db, merkle_store
from gpufleet.ledger.store import Draft, Ledger
from test_ledger import append, read, story

# -- the published vectors ----------------------------------------------------------------------
# From github.com/transparency-dev/merkle: the leaf inputs, every node hash and the roots of sizes 0..8
# are testonly/constants.go (LeafInputs, NodeHashes, RootHashes); the proofs are proof/verify_test.go
# (inclusionProofs, consistencyProofs; leaf numbers there count from 1). The same 8-leaf example as
# Certificate Transparency's python/ct/crypto/merkle_test.py.

LEAVES = [bytes.fromhex(h) for h in
          ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
NODE_HASHES = [
    ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"],
    ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"],
    ["d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
ROOTS = ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
         "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
INCLUSION = [  # (leaf, counting from 1; tree size; audit path)
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")  # verify_test.go


def hexes(hashes) -> list[str]:
    return [h.hex() for h in hashes]


def build(leaf_hashes) -> dict[tuple[int, int], bytes]:
    """Every node of the tree over ``leaf_hashes``, as a store keeps them: (level, idx) -> hash."""
    frontier, nodes = merkle.Frontier(), {}
    for index, h in enumerate(leaf_hashes):
        nodes |= {(level, idx): node for level, idx, node in frontier.push(h, index)}
    return nodes


def getter(nodes):
    return lambda level, idx: nodes[level, idx]


KAT_LEAVES = [merkle.leaf_hash(d) for d in LEAVES]
KAT = build(KAT_LEAVES)


# -- known answers --------------------------------------------------------------------------------


def test_the_roots_of_every_size_are_the_published_ones():
    assert [merkle.root(KAT_LEAVES[:n]).hex() for n in range(9)] == ROOTS
    assert [merkle.range_hash(0, n, getter(KAT)).hex() for n in range(9)] == ROOTS


def test_the_stored_nodes_are_the_published_node_hashes():
    assert {key: h.hex() for key, h in KAT.items()} == \
        {(level, idx): h for level, row in enumerate(NODE_HASHES) for idx, h in enumerate(row)}


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION, ids=[f"{a}-of-{b}" for a, b, _ in INCLUSION])
def test_inclusion_proofs_are_the_published_ones_and_verify(leaf, size, path):
    proof = merkle.inclusion_proof(leaf - 1, size, getter(KAT))
    assert hexes(proof) == path
    assert merkle.verify_inclusion(KAT_LEAVES[leaf - 1], leaf - 1, size, proof, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY, ids=[f"{a}-to-{b}" for a, b, _ in CONSISTENCY])
def test_consistency_proofs_are_the_published_ones_and_verify(old, new, path):
    proof = merkle.consistency_proof(old, new, getter(KAT))
    assert hexes(proof) == path
    assert merkle.verify_consistency(old, new, proof, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]))


def corrupt_inclusion(index, size, proof, root, leaf):
    """verify_test.go's corruptInclusionProof: every probe must fail."""
    probes = [(index - 1, size, root, leaf, proof), (index + 1, size, root, leaf, proof),
              (index ^ 2, size, root, leaf, proof), (index, size * 2, root, leaf, proof),
              (index, size // 2, root, leaf, proof), (index, size, root, b"WrongLeaf", proof),
              (index, size, merkle.EMPTY_ROOT, leaf, proof), (index, size, SOME_HASH, leaf, proof),
              (index, size, root, leaf, [*proof, b""]), (index, size, root, leaf, [*proof, root]),
              (index, size, root, leaf, [b"", *proof]), (index, size, root, leaf, [root, *proof])]
    for i in range(len(proof)):
        flipped = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        probes.append((index, size, root, leaf, [*proof[:i], flipped, *proof[i + 1:]]))
    if proof:
        probes.append((index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((index, size, root, leaf, [proof[0], SOME_HASH, *proof[1:]]))
    return probes


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION[:3], ids=[f"{a}-of-{b}" for a, b, _ in INCLUSION[:3]])
def test_every_corrupted_inclusion_probe_of_the_reference_fails(leaf, size, path):
    proof, root = [bytes.fromhex(h) for h in path], bytes.fromhex(ROOTS[size])
    for index, size_, root_, leaf_, proof_ in corrupt_inclusion(leaf - 1, size, proof, root, KAT_LEAVES[leaf - 1]):
        assert not merkle.verify_inclusion(leaf_, index, size_, proof_, root_), (index, size_)


def test_every_corrupted_consistency_probe_of_the_reference_fails():
    """verify_test.go's corruptConsistencyProof, for each non-trivial published proof."""
    for old, new, path in CONSISTENCY[1:]:
        proof, r1, r2 = [bytes.fromhex(h) for h in path], bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
        probes = [(old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof), (old ^ 2, new, r1, r2, proof),
                  (old, new * 2, r1, r2, proof), (old, new // 2, r1, r2, proof), (old, new, b"WrongRoot", r2, proof),
                  (old, new, r1, b"WrongRoot", proof), (old, new, r2, r1, proof), (old, new, r1, r2, []),
                  (old, new, r1, r2, [*proof, b""]), (old, new, r1, r2, [*proof, r1]), (old, new, r1, r2, [*proof, r2]),
                  (old, new, r1, r2, [b"", *proof]), (old, new, r1, r2, [r1, *proof]),
                  (old, new, r1, r2, [r2, *proof]), (old, new, r1, r2, [proof[0], *proof]),
                  (old, new, r1, r2, proof[:-1])]
        for i in range(len(proof)):
            probes.append((old, new, r1, r2, [*proof[:i], bytes([proof[i][0] ^ 16]) + proof[i][1:], *proof[i + 1:]]))
        for o, n, a, b, p in probes:
            assert not merkle.verify_consistency(o, n, p, a, b), (old, new, o, n)


EMPTY, R1, R2 = merkle.EMPTY_ROOT, KAT_LEAVES[0], KAT_LEAVES[1]


@pytest.mark.parametrize(("old", "new", "old_root", "new_root", "proof", "ok"), [
    (0, 0, EMPTY, EMPTY, [], True),
    (0, 1, EMPTY, R2, [], True),        # the empty tree is a prefix of every tree
    (1, 1, R2, R2, [], True),
    (1, 1, R1, R2, [], False),          # same size, other root
    (0, 0, EMPTY, R2, [], False),
    (0, 1, R1, R2, [], False),          # stricter than verify_test.go: an empty tree has the empty root
    (1, 0, R1, R2, [], False),          # time travel to the past
    (2, 1, R1, R2, [], False),
    (1, 2, R1, R2, [], False),          # an empty proof of a real extension
    (0, 0, EMPTY, EMPTY, [EMPTY], False),  # roots match but the proof is not empty
    (0, 1, EMPTY, EMPTY, [EMPTY], False),
    (1, 1, EMPTY, EMPTY, [EMPTY], False),
])
def test_the_trivial_consistency_cases(old, new, old_root, new_root, proof, ok):
    """verify_test.go's TestVerifyConsistency table (the sizes that are always consistent, time travel,
    empty proofs), with 32-byte roots."""
    assert merkle.verify_consistency(old, new, proof, old_root, new_root) is ok


@pytest.mark.parametrize("args", [
    (R1, 0, 0, [], R1), (R1, 1, 0, [], R1), (R1, 2, 1, [], R1), (R1, -1, 1, [], R1), (R1, 0, -1, [], R1),
    (R1, True, 2, [R2], R1), (R1, 0, 1.0, [], R1), (R1, "0", 1, [], R1), (b"", 0, 1, [], b""),
    (R1, 0, 1, None, R1), (R1, 0, 1, [None], R1), (R1, 0, 2, ["ab" * 32], R1), (R1, 0, 2, [R2[:31]], R1),
    (R1, 0, 1, [], R1.hex()), (R1, 0, 2**70, [R2] * 70, R1),
], ids=lambda a: repr(a)[:40])
def test_a_malformed_inclusion_proof_is_refused_not_an_exception(args):
    assert merkle.verify_inclusion(*args) is False
    assert isinstance(merkle.inclusion_problem(*args), str)


@pytest.mark.parametrize("args", [
    (3, 2, [R1], R1, R2), (-1, 2, [], R1, R2), (1, -2, [], R1, R2), (1.0, 2, [R1], R1, R2),
    (1, 2, "ab", R1, R2), (1, 2, [R1[:5]], R1, R2), (1, 2, [R1], R1[:5], R2), (1, 2, [R1], R1, None),
    (1, 2**70, [R1] * 200, R1, R2), (None, 2, [R1], R1, R2),
], ids=lambda a: repr(a)[:40])
def test_a_malformed_consistency_proof_is_refused_not_an_exception(args):
    assert merkle.verify_consistency(*args) is False
    assert isinstance(merkle.consistency_problem(*args), str)


def test_asking_for_a_proof_of_no_leaf_names_the_field():
    with pytest.raises(InputError, match="leaf_index"):
        merkle.inclusion_proof(8, 8, getter(KAT))
    with pytest.raises(InputError, match="old_size"):
        merkle.consistency_proof(5, 4, getter(KAT))


# -- properties ----------------------------------------------------------------------------------

BIG = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
BIG_TREE = build(BIG)


def reads_counted(nodes):
    seen = []

    def get(level, idx):
        seen.append((level, idx))
        return nodes[level, idx]
    return get, seen


@st.composite
def leaf_in_tree(draw):
    size = draw(st.integers(1, len(BIG)))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw):
    new = draw(st.integers(1, len(BIG)))
    return draw(st.integers(0, new)), new


def mutations(proof: list[bytes], data) -> list[list[bytes]]:
    """A byte flipped anywhere, any element dropped, an element added anywhere (random or a duplicate)."""
    out = []
    if proof:
        i, j = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 31))
        bit = data.draw(st.integers(0, 7))
        item = bytearray(proof[i])
        item[j] ^= 1 << bit
        out.append([*proof[:i], bytes(item), *proof[i + 1:]])
        k = data.draw(st.integers(0, len(proof) - 1))
        out.append(proof[:k] + proof[k + 1:])
    at = data.draw(st.integers(0, len(proof)))
    extra = data.draw(st.binary(min_size=32, max_size=32) | st.sampled_from(proof or [SOME_HASH]))
    out.append([*proof[:at], extra, *proof[at:]])
    return out


@given(leaf_in_tree(), st.data())
def test_an_inclusion_proof_verifies_and_any_change_to_it_fails(case, data):
    index, size = case
    get, seen = reads_counted(BIG_TREE)
    proof, root = merkle.inclusion_proof(index, size, get), merkle.range_hash(0, size, getter(BIG_TREE))
    assert len(seen) <= 2 * size.bit_length()  # O(log n) reads of perfect subtrees
    assert root == merkle.root(BIG[:size])
    assert merkle.verify_inclusion(BIG[index], index, size, proof, root)
    for changed in mutations(proof, data):
        assert not merkle.verify_inclusion(BIG[index], index, size, changed, root)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: BIG[i] != BIG[index]) | st.just(size))
    assert not merkle.verify_inclusion(BIG[index], other, size, proof, root)
    bigger = size + data.draw(st.integers(1, 300))  # the same proof fits a tree whose path has its shape only
    if len(merkle.inclusion_ranges(index, bigger)) != len(proof):
        assert not merkle.verify_inclusion(BIG[index], index, bigger, proof, root)


@given(two_sizes(), st.data())
def test_a_consistency_proof_verifies_and_any_change_to_it_fails(sizes, data):
    old, new = sizes
    get, seen = reads_counted(BIG_TREE)
    proof = merkle.consistency_proof(old, new, get)
    assert len(seen) <= 2 * new.bit_length()
    old_root, new_root = merkle.root(BIG[:old]), merkle.root(BIG[:new])
    assert merkle.verify_consistency(old, new, proof, old_root, new_root)
    if 0 < old < new:
        for changed in mutations(proof, data):
            assert not merkle.verify_consistency(old, new, changed, old_root, new_root)
        assert not merkle.verify_consistency(old, new, proof, merkle.root(BIG[:old - 1]), new_root)
        assert not merkle.verify_consistency(old, new, proof, old_root, merkle.root(BIG[:new - 1]))


# -- the tree in the ledger ------------------------------------------------------------------------


def stored(conn) -> dict[tuple[int, int], str]:
    return {(lv, i): h for lv, i, h in conn.execute(text("SELECT level, idx, hash FROM merkle_nodes")).all()}


def recomputed(conn) -> dict[tuple[int, int], str]:
    """The tree built from scratch from the events as stored."""
    rows = conn.execute(text("SELECT seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, "
                             "payload FROM events ORDER BY seq")).all()
    return {key: h.hex() for key, h in build([merkle.leaf_hash(canonical_bytes(*r)) for r in rows]).items()}


def entities(n: int, first: int = 0) -> list[Draft]:
    return Story("2024-01-01").drafts() + [Draft(ev.EntityRegistered(entity=f"e{i}", name=f"E{i}"),
                                                  date(2024, 1, 1), "t") for i in range(first, first + n)]


def test_the_stored_tree_is_the_reference_tree_for_the_published_leaves(engine):
    """add_leaves in three calls (1, 2, then 5 leaves) stores exactly the published node hashes."""
    with engine.begin() as conn:
        for first, last in [(1, 1), (2, 3), (4, 8)]:
            merkle_store.add_leaves(conn, first, KAT_LEAVES[first - 1:last])
        assert stored(conn) == {key: h.hex() for key, h in KAT.items()}


def test_appends_of_every_kind_keep_the_tree_equal_to_one_built_from_scratch(engine):
    """Single events, batches, a late record, a void: the tree is over all events in seq order."""
    drafts = story().drafts()
    append(engine, drafts[:1])
    append(engine, drafts[1:2])
    written, _ = append(engine, drafts[2:])
    append(engine, [Draft(ev.GpusFailed(owner="a", model="h100", gpus=3, site="s1"), date(2024, 2, 10), "t")])
    append(engine, [Draft(ev.EventVoided(seq=written[-1].seq, reason="glitch"), date(2026, 1, 1), "t")])
    append(engine, entities(21), snapshot_every=4)
    with engine.connect() as conn:
        size = merkle_store.tree_size(conn)
        assert size == len(drafts) + 23 and stored(conn) == recomputed(conn)
        assert len(stored(conn)) == sum(size >> level for level in range(size.bit_length()))
        leaves = [merkle.leaf_hash(canonical_bytes(*r)) for r in conn.execute(text(
            "SELECT seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, payload "
            "FROM events ORDER BY seq")).all()]
        for n in range(size + 1):
            assert merkle_store.root_hash(conn, n) == merkle.root(leaves[:n])
        for seq in range(1, size + 1):
            proof = merkle_store.inclusion(conn, seq, size)
            assert proof.leaf_hash == leaves[seq - 1] and proof.verify()
        for old in range(size + 1):
            assert merkle_store.consistency(conn, old, size).verify()
    assert read(engine, lambda led: led.verify()).ok


def test_a_refused_batch_leaves_no_node_behind(engine):
    append(engine, entities(5))
    with pytest.raises(InputError):
        append(engine, [*entities(3, first=100), Draft(ev.EventVoided(seq=999, reason="x"), date(2024, 1, 1), "t")])
    with engine.connect() as conn:
        assert stored(conn) == recomputed(conn) and len(stored(conn)) == 5 + 2 + 1


def test_proofs_beyond_the_head_are_refused_naming_the_field(engine):
    append(engine, entities(4))
    with engine.connect() as conn:
        for call, field in [(lambda: merkle_store.root_hash(conn, 5), "size"),
                            (lambda: merkle_store.inclusion(conn, 5, 4), "seq"),
                            (lambda: merkle_store.inclusion(conn, 0, 4), "seq"),
                            (lambda: merkle_store.inclusion_proof(conn, 1, 9), "size"),
                            (lambda: merkle_store.consistency(conn, 3, 5), "new"),
                            (lambda: merkle_store.consistency_proof(conn, 4, 3), "old")]:
            with pytest.raises(InputError) as caught:
                call()
            assert caught.value.field == field


def load_migration():
    path = Path(db.__file__).parent / "migrations" / "versions" / "0004_disclosure.py"
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_backfills_the_tree_of_a_ledger_from_revision_0003(engine):
    from alembic import command

    append(engine, story().drafts())
    append(engine, entities(9))
    with engine.connect() as conn:
        before = stored(conn)
    with engine.begin() as conn:
        command.downgrade(db.alembic_config(conn), "0003")
        assert "merkle_nodes" not in {t for (t,) in conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            if conn.dialect.name == "postgresql" else "SELECT name FROM sqlite_master WHERE type = 'table'"))}
    db.upgrade(engine)
    with engine.connect() as conn:
        assert stored(conn) == before == recomputed(conn)
    assert read(engine, lambda led: led.verify()).ok


def test_the_backfill_in_small_batches_gives_the_same_tree(engine, monkeypatch):
    append(engine, entities(30))
    migration = load_migration()
    monkeypatch.setattr(migration, "BATCH", 7)
    with engine.begin() as conn:
        tampering.disable_guards(conn)
        before = stored(conn)
        conn.execute(text("DELETE FROM merkle_nodes"))
        migration._backfill(conn)
        assert stored(conn) == before


def test_the_backfill_refuses_a_ledger_with_a_gap(sqlite_engine):
    append(sqlite_engine, entities(5))
    with sqlite_engine.begin() as conn:
        tampering.disable_guards(conn)
        conn.execute(text("DELETE FROM merkle_nodes"))
        conn.execute(text("DELETE FROM events WHERE seq = 3"))
        with pytest.raises(LedgerCorrupt, match="not numbered"):
            load_migration()._backfill(conn)


TREE_ATTACKS = {
    "leaf-edited": ("UPDATE merkle_nodes SET hash = :h WHERE level = 0 AND idx = 4", (0, 4),
                    "level 0, index 4 (events 5..5) was altered"),
    "parent-edited": ("UPDATE merkle_nodes SET hash = :h WHERE level = 2 AND idx = 1", (2, 1),
                      "level 2, index 1 (events 5..8) was altered"),
    "root-of-16-edited": ("UPDATE merkle_nodes SET hash = :h WHERE level = 4 AND idx = 0", (4, 0),
                          "level 4, index 0 (events 1..16) was altered"),
    "leaf-deleted": ("DELETE FROM merkle_nodes WHERE level = 0 AND idx = 9", (0, 9),
                     "level 0, index 9 (events 10..10) is missing"),
    "parent-deleted": ("DELETE FROM merkle_nodes WHERE level = 1 AND idx = 3", (1, 3),
                       "level 1, index 3 (events 7..8) is missing"),
    "node-added": ("INSERT INTO merkle_nodes (level, idx, hash) VALUES (3, 5, :h)", (3, 5),
                   "level 3, index 5 (events 41..48) is stored but the ledger has"),
}


@pytest.mark.parametrize(("statement", "node", "reason"), TREE_ATTACKS.values(), ids=TREE_ATTACKS.keys())
def test_verify_names_an_edited_deleted_or_added_tree_node(engine, monkeypatch, statement, node, reason):
    from gpufleet.ledger import store

    append(engine, entities(20))
    with engine.begin() as conn:
        tampering.disable_guards(conn)
        conn.execute(text(statement), {"h": "ab" * 32})
    monkeypatch.setattr(store, "PARALLEL_VERIFY_MIN", 1)
    for workers in (1, 2):
        report = read(engine, lambda led: led.verify(workers=workers))
        assert (report.ok, report.bad_tree_node, report.first_bad_seq) == (False, node, (node[1] << node[0]) + 1)
        assert reason in report.reason, report.reason


def test_the_tree_is_append_only(engine):
    from sqlalchemy.exc import DBAPIError

    append(engine, entities(3))
    for statement in ["UPDATE merkle_nodes SET hash = 'x'", "DELETE FROM merkle_nodes"]:
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))


def test_a_proof_over_a_tree_with_a_missing_node_is_ledger_corrupt(sqlite_engine):
    append(sqlite_engine, entities(6))
    with sqlite_engine.begin() as conn:
        tampering.disable_guards(conn)
        conn.execute(text("DELETE FROM merkle_nodes WHERE level = 2 AND idx = 0"))
    with sqlite_engine.connect() as conn, pytest.raises(LedgerCorrupt, match="level 2, index 0 .* is missing"):
        merkle_store.root_hash(conn, 6)


# -- the store under hypothesis --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger_of_100(tmp_path_factory):
    """One SQLite ledger of 104 events, appended in batches of several sizes, and its leaf hashes."""
    engine = db.make_engine(str(tmp_path_factory.mktemp("merkle") / "ledger.db"))
    db.upgrade(engine)
    drafts = entities(100)
    for start, end in [(0, 1), (1, 2), (2, 7), (7, 8), (8, 40), (40, 104)]:
        with engine.begin() as conn:
            Ledger(conn).append(drafts[start:end])
    with engine.connect() as conn:
        leaves = [merkle.leaf_hash(canonical_bytes(*r)) for r in conn.execute(text(
            "SELECT seq, recorded_at, effective_date, actor, type, idempotency_key, prev_hash, payload "
            "FROM events ORDER BY seq")).all()]
    yield engine, leaves
    engine.dispose()


@given(st.data())
def test_proofs_from_the_store_verify_against_its_roots(ledger_of_100, data):
    engine, leaves = ledger_of_100
    size = data.draw(st.integers(1, len(leaves)))
    seq, old = data.draw(st.integers(1, size)), data.draw(st.integers(0, size))
    with engine.connect() as conn:
        root = merkle_store.root_hash(conn, size)
        path = merkle_store.inclusion_proof(conn, seq, size)
        proof = merkle_store.consistency_proof(conn, old, size)
        old_root = merkle_store.root_hash(conn, old)
    assert root == merkle.root(leaves[:size]) and old_root == merkle.root(leaves[:old])
    assert merkle.verify_inclusion(leaves[seq - 1], seq - 1, size, path, root)
    assert merkle.verify_consistency(old, size, proof, old_root, root)
