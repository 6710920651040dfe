"""Related parties: who is related to whom, and why.

Two entities are related when one person holds a role (director, officer, >=5% holder,
controlling shareholder; or as family of someone who does) in both, or when one
controls the other through the chain of parents.

A role held by P "as family of" F relates the entity to both P and F: an entity where P holds a
role as F's family is related to every entity where P holds a role, and to every entity where F
holds one, directly or through other family (SEC Regulation S-K Item 404 counts a director's
immediate family as related persons themselves, so the link runs both ways). Approvals read
the same link: either person is interested in a transaction that benefits the other's entity.
"""

from __future__ import annotations

from itertools import combinations

from gpufleet.domain.state import FleetState


def ancestors(state: FleetState, entity: str) -> list[str]:
    """The parents of ``entity``, nearest first (registration order makes the chain acyclic)."""
    chain, current = [], state.entities[entity].parent
    while current is not None:
        chain.append(current)
        current = state.entities[current].parent
    return chain


def related_parties(state: FleetState) -> dict[frozenset[str], str]:
    """Every related pair of entities, with the basis of the finding in one sentence."""
    found: dict[frozenset[str], str] = {}
    for entity in sorted(state.entities):
        for parent in ancestors(state, entity):
            found.setdefault(frozenset((entity, parent)), f"{parent} controls {entity} through its parents")
    by_person: dict[str, dict[str, str]] = {}
    for person, entity, role, family_of in sorted(state.roles):
        basis = f"{person} ({role}" + (f", family of {family_of})" if family_of else ")")
        for holder in (person, family_of) if family_of else (person,):
            by_person.setdefault(holder, {}).setdefault(entity, basis)
    for holder, entities in sorted(by_person.items()):
        for a, b in combinations(sorted(entities), 2):
            found.setdefault(frozenset((a, b)),
                             f"{a} and {b} share a related person: {entities[a]} in {a}, {entities[b]} in {b}")
    return found
