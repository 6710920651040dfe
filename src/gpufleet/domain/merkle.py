"""The ledger's Merkle tree: RFC 9162 (RFC 6962) hashing, proofs and their verifiers (pure: hashlib only).

The tree is over the events 1..n in sequence order; the leaf for event ``seq`` has the 0-based
index ``seq - 1``. With SHA-256 and the two domain-separation prefixes of RFC 9162 §2.1.1::

    leaf_hash(d)     = SHA-256(0x00 || d)          d: the event's canonical bytes (gpufleet.domain.chain)
    node_hash(l, r)  = SHA-256(0x01 || l || r)
    MTH({})          = SHA-256()                   the empty tree
    MTH(D[n])        = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k: the largest power of two < n

A *range* ``(start, end)`` is the leaves ``start .. end - 1``. Every range a proof needs is a node of
the tree, so its start is a multiple of the largest power of two <= its width, and its hash is the
fold, right to left, of its *perfect pieces*: the aligned perfect subtrees given by the set bits of
its width, largest first. A perfect subtree is named ``(level, idx)``: the leaves
``idx * 2**level .. (idx + 1) * 2**level - 1`` (level 0: one leaf). Proofs are built from an
accessor ``get(level, idx) -> hash`` of perfect subtrees, so a store serves any proof with
O(log n) reads (:func:`pieces` lists them up front, to read in one query).

The verifiers (:func:`verify_inclusion`, :func:`verify_consistency`) are RFC 9162 §2.1.3.2 and
§2.1.4.2 step by step; they are what an outsider runs. They return False for any proof that does
not prove what it claims (never an IndexError); :func:`inclusion_problem` and
:func:`consistency_problem` say why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gpufleet.errors import InputError

HASH_SIZE = 32  # bytes of a SHA-256 digest
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH of the empty tree
Range = tuple[int, int]  # leaves start .. end - 1
Node = tuple[int, int]  # (level, idx): a perfect aligned subtree
Get = Callable[[int, int], bytes]  # (level, idx) -> the root hash of that perfect subtree


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf (32 bytes)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node (32 bytes)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(width: int) -> int:
    """k, the largest power of two strictly below ``width`` (``width >= 2``): MTH's split point."""
    return 1 << ((width - 1).bit_length() - 1)


# -- building ---------------------------------------------------------------------------------


class Frontier:
    """The right edge of a tree being built leaf by leaf: the roots of its maximal perfect subtrees,
    largest (leftmost) first, as ``[level, idx, hash]``. :meth:`push` returns every node it
    completes, so a store writes each node exactly once. Invariant: the levels strictly decrease,
    and they are the set bits of the tree size."""

    def __init__(self, edge: Iterable[tuple[int, int, bytes]] = ()):
        self.edge = [list(node) for node in edge]

    def push(self, hash_: bytes, index: int) -> list[tuple[int, int, bytes]]:
        """Add leaf ``index`` (the next one) with leaf hash ``hash_``; return the nodes it completes,
        the leaf first, then each parent up the tree."""
        edge = self.edge
        edge.append([0, index, hash_])
        done = [(0, index, hash_)]
        while len(edge) > 1 and edge[-2][0] == edge[-1][0]:
            right = edge.pop()
            left = edge[-1]
            left[0], left[1], left[2] = left[0] + 1, left[1] >> 1, node_hash(left[2], right[2])
            done.append((left[0], left[1], left[2]))
        return done

    def root(self) -> bytes:
        """MTH of the leaves pushed so far: the edge folded right to left."""
        if not self.edge:
            return EMPTY_ROOT
        result = self.edge[-1][2]
        for _level, _idx, h in reversed(self.edge[:-1]):
            result = node_hash(h, result)
        return result


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes (RFC 9162 §2.1.1), in O(n) time and O(log n) memory."""
    frontier = Frontier()
    for index, h in enumerate(leaves):
        frontier.push(h, index)
    return frontier.root()


def edge_nodes(size: int) -> list[Node]:
    """The maximal perfect subtrees of a tree of ``size`` leaves, left to right: what a builder
    needs to know to append leaf ``size``."""
    return pieces(0, size)


# -- the shape of proofs ----------------------------------------------------------------------


def pieces(start: int, end: int) -> list[Node]:
    """The perfect aligned subtrees making up the range, left to right (largest first). The range must
    be a node of some tree (``start`` a multiple of the largest power of two <= ``end - start``)."""
    out, pos = [], start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes are PATH(index, D[size]) (RFC 9162 §2.1.3.1), bottom up."""
    _require(0 <= index < size, "leaf_index", f"leaf index {index} is not below the tree size {size}")
    ranges, start, end = [], 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose hashes are PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1): empty when
    ``old_size`` is 0 or equals ``new_size``; else SUBPROOF(old_size, D[new_size], true)."""
    _require(0 <= old_size <= new_size, "old_size", f"old size {old_size} is not between 0 and {new_size}")
    if old_size in (0, new_size):
        return []
    ranges, start, end, m, whole = [], 0, new_size, old_size, True
    while m != end - start:
        k = split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        ranges.append((start, end))
    return ranges[::-1]


def needed(ranges: Iterable[Range]) -> list[Node]:
    """Every perfect subtree the hashes of ``ranges`` are folded from, without repeats."""
    return list(dict.fromkeys(node for start, end in ranges for node in pieces(start, end)))


def range_hash(start: int, end: int, get: Get) -> bytes:
    """MTH(D[start:end]) from its perfect pieces, folded right to left; EMPTY_ROOT for no leaves."""
    nodes = pieces(start, end)
    if not nodes:
        return EMPTY_ROOT
    result = get(*nodes[-1])
    for node in reversed(nodes[:-1]):
        result = node_hash(get(*node), result)
    return result


def inclusion_proof(index: int, size: int, get: Get) -> list[bytes]:
    """The audit path of leaf ``index`` (0-based) in the tree of ``size`` leaves, bottom up."""
    return [range_hash(start, end, get) for start, end in inclusion_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, get: Get) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size``."""
    return [range_hash(start, end, get) for start, end in consistency_ranges(old_size, new_size)]


def _require(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise InputError(reason, field=field)


# -- verifying (what an outsider runs) -----------------------------------------------------------


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _malformed(proof: object, *hashes: object) -> str | None:
    """Why the arguments cannot be a proof at all (not a list of 32-byte hashes), or None."""
    if not isinstance(proof, list | tuple) or not all(_is_hash(p) for p in proof):
        return "the proof is not a list of 32-byte hashes"
    if not all(_is_hash(h) for h in hashes):
        return "a hash given is not 32 bytes"
    return None


def inclusion_problem(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_: bytes) -> str | None:
    """Why ``proof`` does not show that ``leaf`` is leaf ``index`` of the tree of ``size`` leaves with
    root ``root_`` (RFC 9162 §2.1.3.2), or None when it does."""
    if not (_is_size(index) and _is_size(size)):
        return "the leaf index and tree size must be integers >= 0"
    if (bad := _malformed(proof, leaf, root_)) is not None:
        return bad
    if index >= size:  # step 1
        return f"the leaf index {index} is not below the tree size {size}"
    fn, sn, r = index, size - 1, leaf  # steps 2, 3
    for p in proof:  # step 4
        if sn == 0:
            return "the proof is longer than the path to the root"
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # step 5
        return "the proof is shorter than the path to the root"
    return None if r == root_ else "the proof leads to another root"


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_: bytes) -> bool:
    """True when ``proof`` shows leaf hash ``leaf`` at 0-based ``index`` in the tree (``size``, ``root_``)."""
    return inclusion_problem(leaf, index, size, proof, root_) is None


def consistency_problem(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes,
                        new_root: bytes) -> str | None:
    """Why ``proof`` does not show that the tree (``old_size``, ``old_root``) is a prefix of the tree
    (``new_size``, ``new_root``) (RFC 9162 §2.1.4.2), or None when it does. Trivial cases: equal
    sizes need equal roots and an empty proof; an empty old tree needs the empty root and an empty
    proof."""
    if not (_is_size(old_size) and _is_size(new_size)):
        return "the tree sizes must be integers >= 0"
    if (bad := _malformed(proof, old_root, new_root)) is not None:
        return bad
    if old_size > new_size:
        return f"the old size {old_size} is larger than the new size {new_size}"
    if old_size in (0, new_size):
        return _trivial_consistency(old_size, new_size, proof, old_root, new_root)
    return _consistency_steps(old_size, new_size, list(proof), old_root, new_root)


def _trivial_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes,
                         new_root: bytes) -> str | None:
    if proof:
        return "the proof must be empty when the old tree is empty or the same size"
    if old_size == 0 and old_root != EMPTY_ROOT:
        return "the old root is not the root of the empty tree"
    if old_size == new_size and old_root != new_root:
        return "the trees have the same size but different roots"
    return None


def _consistency_steps(first: int, second: int, path: list[bytes], first_hash: bytes,
                       second_hash: bytes) -> str | None:
    """RFC 9162 §2.1.4.2 steps 1 to 7, for 0 < first < second."""
    if not path:  # step 1
        return "the proof is empty"
    if first & (first - 1) == 0:  # step 2
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return "the proof is longer than the paths to the roots"
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # step 7
        return "the proof is shorter than the paths to the roots"
    if fr != first_hash:
        return "the proof leads to another old root"
    return None if sr == second_hash else "the proof leads to another new root"


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes,
                       new_root: bytes) -> bool:
    """True when ``proof`` shows the tree (``old_size``, ``old_root``) is a prefix of (``new_size``, ``new_root``)."""
    return consistency_problem(old_size, new_size, proof, old_root, new_root) is None


# -- proofs as values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    """Leaf ``leaf_index`` (0-based: event seq - 1) of the tree of ``tree_size`` leaves, with its hash,
    the tree's root and the audit path (bottom up)."""

    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    root_hash: bytes
    audit_path: list[bytes]

    def verify(self) -> bool:
        """The proof checked by :func:`verify_inclusion` against its own leaf hash and root."""
        return verify_inclusion(self.leaf_hash, self.leaf_index, self.tree_size, self.audit_path, self.root_hash)

    def to_json(self) -> dict:
        """``{"leaf_index", "seq", "tree_size", "leaf_hash", "root_hash", "audit_path"}``, hashes as hex."""
        return {"leaf_index": self.leaf_index, "seq": self.leaf_index + 1, "tree_size": self.tree_size,
                "leaf_hash": self.leaf_hash.hex(), "root_hash": self.root_hash.hex(),
                "audit_path": [h.hex() for h in self.audit_path]}


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``old_size`` leaves (root ``old_root``) is a prefix of the tree of ``new_size`` (``new_root``)."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: list[bytes]

    def verify(self) -> bool:
        """The proof checked by :func:`verify_consistency` against its own sizes and roots."""
        return verify_consistency(self.old_size, self.new_size, self.proof, self.old_root, self.new_root)

    def to_json(self) -> dict:
        """``{"old_size", "new_size", "old_root", "new_root", "proof"}``, hashes as hex."""
        return {"old_size": self.old_size, "new_size": self.new_size, "old_root": self.old_root.hex(),
                "new_root": self.new_root.hex(), "proof": [h.hex() for h in self.proof]}
