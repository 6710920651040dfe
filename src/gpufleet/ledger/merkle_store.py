"""The ledger's Merkle tree in the database: table ``merkle_nodes``, maintained with the events.

Row ``(level L, idx i, hash)`` is the root of the perfect subtree over the leaves
``i * 2**L .. (i + 1) * 2**L - 1`` (leaf index = seq - 1), as 64 hex digits; level 0 holds the leaf
hashes. :func:`add_leaves` runs in the append's transaction (``_Writer._flush``): it reads the
O(log n) nodes of the tree's right edge, and writes each new leaf and every parent it completes, in
one bulk insert. So a tree of n events holds exactly the nodes ``(L, i)`` with ``i < n >> L``.

Every proof reads only the O(log n) perfect subtrees it is folded from, in one SELECT
(:func:`gpufleet.domain.merkle.needed`). The tree is derived data: ``Ledger.verify`` recomputes every
leaf from its event and every parent from its children (:func:`first_bad_parent`, :func:`shape_problem`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import Connection, func, insert, select

from gpufleet.domain import merkle
from gpufleet.domain.merkle import ConsistencyProof, InclusionProof, Node, Range
from gpufleet.errors import InputError, LedgerCorrupt
from gpufleet.ledger.schema import ledger_head, merkle_nodes

_SQLITE_INSERT = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)"
_READ_CHUNK = 400  # (level, idx) pairs per SELECT; a proof needs at most about 2 x 64


# -- writing (the append's transaction) ---------------------------------------------------------


def add_leaves(conn: Connection, first_seq: int, leaf_hashes: Sequence[bytes]) -> None:
    """Store the leaves of events ``first_seq ..`` (the next ones: events 1..first_seq - 1 have theirs)
    and every node they complete, in the caller's transaction. Reads the tree's right edge (at most
    one node per bit of first_seq - 1), then writes every node in one bulk insert."""
    if not leaf_hashes:
        return
    size = first_seq - 1
    edge = merkle.edge_nodes(size)
    found = _read(conn, edge)
    frontier = merkle.Frontier((level, idx, found[level, idx]) for level, idx in edge)
    rows = []
    for offset, leaf in enumerate(leaf_hashes):
        rows.extend((level, idx, h.hex()) for level, idx, h in frontier.push(leaf, size + offset))
    insert_nodes(conn, rows)


def insert_nodes(conn: Connection, rows: list[tuple[int, int, str]]) -> None:
    """Bulk-insert ``(level, idx, hex hash)`` rows: COPY on PostgreSQL, the DB-API executemany on SQLite."""
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        conn.execute(insert(merkle_nodes), [{"level": lv, "idx": i, "hash": h} for lv, i, h in rows])
        return
    cursor = conn.connection.driver_connection.cursor()
    try:
        if dialect == "postgresql":
            with cursor.copy("COPY merkle_nodes (level, idx, hash) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(_SQLITE_INSERT, rows)
    finally:
        cursor.close()


# -- reading: roots and proofs --------------------------------------------------------------


def tree_size(conn: Connection) -> int:
    """The number of leaves: the ledger head's seq."""
    return conn.execute(select(ledger_head.c.seq).where(ledger_head.c.id == 1)).scalar_one()


def root_hash(conn: Connection, size: int) -> bytes:
    """MTH of events 1..``size`` (32 bytes; the empty tree's for 0). Refused beyond the head."""
    _check_size(conn, size, "size")
    return _hashes(conn, [(0, size)])[0]


def inclusion_proof(conn: Connection, seq: int, size: int) -> list[bytes]:
    """The audit path of event ``seq`` in the tree of the first ``size`` events, bottom up."""
    return inclusion(conn, seq, size).audit_path


def consistency_proof(conn: Connection, old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``old_size`` events is a prefix of the tree of ``new_size`` events."""
    return consistency(conn, old_size, new_size).proof


def inclusion(conn: Connection, seq: int, size: int) -> InclusionProof:
    """Event ``seq``'s leaf hash, audit path and the root of the tree of ``size`` events, from one read."""
    _check_size(conn, size, "size")
    if not 1 <= seq <= size:
        raise InputError(f"event {seq} is not in a tree of {size} events (1..{size})", field="seq")
    path = merkle.inclusion_ranges(seq - 1, size)
    leaf, root, *audit = _hashes(conn, [(seq - 1, seq), (0, size), *path])
    return InclusionProof(seq - 1, size, leaf, root, audit)


def consistency(conn: Connection, old_size: int, new_size: int) -> ConsistencyProof:
    """Both roots and the consistency proof between the trees of ``old_size`` and ``new_size`` events."""
    _check_size(conn, new_size, "new")
    if not 0 <= old_size <= new_size:
        raise InputError(f"the old tree size {old_size} must be between 0 and the new size {new_size}", field="old")
    ranges = merkle.consistency_ranges(old_size, new_size)
    old_root, new_root, *proof = _hashes(conn, [(0, old_size), (0, new_size), *ranges])
    return ConsistencyProof(old_size, new_size, old_root, new_root, proof)


def _check_size(conn: Connection, size: int, field: str) -> None:
    head = tree_size(conn)
    if not 0 <= size <= head:
        raise InputError(f"tree size {size} is not between 0 and the ledger's {head} events", field=field)


def _hashes(conn: Connection, ranges: Sequence[Range]) -> list[bytes]:
    """MTH of each range, from the perfect subtrees they need, read in one query."""
    found = _read(conn, merkle.needed(ranges))
    return [merkle.range_hash(start, end, lambda level, idx: found[level, idx]) for start, end in ranges]


def _read(conn: Connection, nodes: Sequence[Node]) -> dict[Node, bytes]:
    """The stored hashes of ``nodes``; LedgerCorrupt naming the first one that is missing."""
    found: dict[Node, bytes] = {}
    for i in range(0, len(nodes), _READ_CHUNK):
        # (level = L AND idx = I) OR ...: both databases look each one up in the primary key (SQLite
        # scans the table for a row-value IN list); the values are our own integers, written as literals
        where = " OR ".join(f"(level = {int(level)} AND idx = {int(idx)})" for level, idx in nodes[i:i + _READ_CHUNK])
        rows = conn.exec_driver_sql(f"SELECT level, idx, hash FROM merkle_nodes WHERE {where}")
        found |= {(level, idx): bytes.fromhex(h) for level, idx, h in rows}
    for node in nodes:
        if node not in found:
            raise LedgerCorrupt(f"{describe(*node)} is missing from merkle_nodes: run `gpufleet ledger verify`",
                                seq=(node[1] << node[0]) + 1)
    return found


# -- checking (Ledger.verify) ------------------------------------------------------------------

MAX_LEVEL = 63  # a tree of at most 2**63 - 1 leaves has no node above this level


def parents_sql(start: int, end: int | None) -> str:
    """Each parent whose first leaf is in ``start .. end - 1`` (to the last if None) with its two
    children, in (level, idx) order: a parallel verify splits the parents as it splits the events."""
    terms = []
    for level in range(1, MAX_LEVEL + 1):
        low = -(-start >> level)  # ceil(start / 2**level): the first parent at this level starting at or after it
        high = "" if end is None else f" AND p.idx < {-(-end >> level)}"
        if end is not None and -(-end >> level) <= low:
            break
        terms.append(f"(p.level = {level} AND p.idx >= {low}{high})")
    return ("SELECT p.level, p.idx, p.hash, l.hash, r.hash FROM merkle_nodes p "
            "LEFT JOIN merkle_nodes l ON l.level = p.level - 1 AND l.idx = 2 * p.idx "
            "LEFT JOIN merkle_nodes r ON r.level = p.level - 1 AND r.idx = 2 * p.idx + 1 "
            f"WHERE {' OR '.join(terms) or 'FALSE'} ORDER BY p.level, p.idx")


def describe(level: int, idx: int) -> str:
    """A node as users read it: ``the Merkle tree node at level 2, index 1 (events 5..8)``."""
    first = (idx << level) + 1
    return f"the Merkle tree node at level {level}, index {idx} (events {first}..{first + (1 << level) - 1})"


def first_bad_parent(rows: Iterable[tuple[int, int, str, str | None, str | None]]) -> tuple[Node, str] | None:
    """The first stored parent (rows of :func:`parents_sql`) that is not node_hash of its stored
    children, with the reason; None when every one is."""
    node_hash, fromhex = merkle.node_hash, bytes.fromhex
    for level, idx, h, left, right in rows:
        if left is None or right is None:
            _close(rows)
            return (level, idx), f"{describe(level, idx)} has a missing child"
        if node_hash(fromhex(left), fromhex(right)).hex() != h:
            _close(rows)
            return (level, idx), f"{describe(level, idx)} was altered: it is not the hash of its children"
    return None


def _close(rows: Iterable) -> None:
    if isinstance(rows, Iterator) and hasattr(rows, "close"):
        rows.close()


def shape_problem(conn: Connection, size: int) -> tuple[Node, str] | None:
    """The first node missing from, or extra in, the tree of ``size`` leaves, which holds exactly the
    nodes (L, i) with i < size >> L; None when the stored nodes are exactly those."""
    query = select(merkle_nodes.c.level, func.count(), func.min(merkle_nodes.c.idx), func.max(merkle_nodes.c.idx)
                   ).group_by(merkle_nodes.c.level).order_by(merkle_nodes.c.level)
    stored = {level: (count, low, high) for level, count, low, high in conn.execute(query)}
    for level in sorted(set(stored) | set(range(size.bit_length()))):
        want = size >> level if level >= 0 else 0
        count, low, high = stored.get(level, (0, 0, -1))
        if level < 0 or high >= want or low < 0:
            extra = high if high >= want else low
            return (level, extra), f"{describe(level, extra)} is stored but the ledger has {size} events"
        if count != want:
            gap = _first_gap(conn, level)
            return (level, gap), f"{describe(level, gap)} is missing"
    return None


def _first_gap(conn: Connection, level: int, start: int = 0) -> int:
    """The smallest index from ``start`` missing at ``level`` (the nodes there are all below the expected count)."""
    query = select(merkle_nodes.c.idx).where(merkle_nodes.c.level == level, merkle_nodes.c.idx >= start
                                             ).order_by(merkle_nodes.c.idx)
    expected = start
    for idx in conn.execute(query).scalars():
        if idx != expected:
            return expected
        expected += 1
    return expected


# -- checking what an append added (Ledger checks of the events since a verified prefix) --------------------


def grown_sql(old_size: int, new_size: int) -> str:
    """Each parent the leaves ``old_size .. new_size - 1`` completed (at level L: ``old_size >> L`` <= idx <
    ``new_size >> L``) with its two children, in (level, idx) order: the nodes a tree of ``old_size``
    leaves lacks and one of ``new_size`` holds, those that start among the older leaves included."""
    terms = [f"(p.level = {level} AND p.idx >= {old_size >> level} AND p.idx < {new_size >> level})"
             for level in range(1, new_size.bit_length()) if new_size >> level > old_size >> level]
    return ("SELECT p.level, p.idx, p.hash, l.hash, r.hash FROM merkle_nodes p "
            "LEFT JOIN merkle_nodes l ON l.level = p.level - 1 AND l.idx = 2 * p.idx "
            "LEFT JOIN merkle_nodes r ON r.level = p.level - 1 AND r.idx = 2 * p.idx + 1 "
            f"WHERE {' OR '.join(terms) or 'FALSE'} ORDER BY p.level, p.idx")


def grown_shape_problem(conn: Connection, old_size: int, new_size: int) -> tuple[Node, str] | None:
    """As :func:`shape_problem`, for the nodes at or past a tree of ``old_size`` leaves only (each level's
    indexes from ``old_size >> L``, an index range of the primary key): exactly those of the tree of
    ``new_size`` leaves must be there, and none beyond it."""
    where = " OR ".join(f"(level = {level} AND idx >= {old_size >> level})" for level in range(MAX_LEVEL + 1))
    stored = {level: (count, high) for level, count, high in conn.exec_driver_sql(
        f"SELECT level, count(*), max(idx) FROM merkle_nodes WHERE {where} GROUP BY level")}
    for level in range(MAX_LEVEL + 1):
        low, want = old_size >> level, new_size >> level
        count, high = stored.get(level, (0, low - 1))
        if high >= want:
            return (level, high), f"{describe(level, high)} is stored but the ledger has {new_size} events"
        if count != want - low:
            gap = _first_gap(conn, level, low)
            return (level, gap), f"{describe(level, gap)} is missing"
    return None
