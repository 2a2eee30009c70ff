"""Operator decisions as values: strategy, drains, disables, weights. Pure.

A `Decisions` is one versioned document. Every backend stores and ships
the same document, and every replica turns it into routing the same way,
so a drain computes the same effective weight everywhere at the same moment.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Iterable, Mapping, Protocol

import orjson

ACTIONS = ("strategy", "drain", "disable", "enable", "weight")


@dataclass(frozen=True, slots=True)
class Drain:
    started: float  # wall-clock time (time.time()): meaningful across processes
    over: float  # seconds until the region's share reaches zero


@dataclass(frozen=True, slots=True)
class Decisions:
    strategy: str
    disabled: frozenset[str] = frozenset()
    drains: Mapping[str, Drain] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)  # operator overrides of [[regions]] weight
    # Ordering: `version` grows by one per committed mutation; `epoch` names the
    # document's lineage (a Redis that lost its data and was seeded afresh).
    version: int = 0
    epoch: str = ""
    by: str = ""  # the replica that made the last change
    at: float = 0.0  # when (wall clock)

    def newer_than(self, other: "Decisions") -> bool:
        """Whether a replica holding `other` must take this document: another
        lineage, a higher version, or the same version with other content (the
        store lost a write, e.g. in a failover, and this is what it holds now)."""
        if self.epoch != other.epoch or self.version != other.version:
            return self.epoch != other.epoch or self.version > other.version
        return self != other


class DecisionSource(Protocol):
    """What the region store reads: the decisions in force on this replica."""

    def current(self) -> Decisions: ...


class Conflict(Exception):
    """The mutation would leave no enabled region (HTTP 409)."""

    def __init__(self, regions: dict[str, str]) -> None:
        self.regions = regions  # region -> why it is not enabled
        super().__init__(
            "no enabled region would be left: "
            + ", ".join(f"{r} ({why})" for r, why in sorted(regions.items()))
            + '; send "force": true to do it anyway'
        )


@dataclass(frozen=True, slots=True)
class Mutation:
    action: str  # one of ACTIONS
    region: str | None = None
    strategy: str | None = None
    over: float | None = None  # drain duration (seconds)
    started: float | None = None  # drain start (wall clock)
    weight: float | None = None

    def args(self) -> dict:
        return {k: v for k, v in (("region", self.region), ("strategy", self.strategy),
                                  ("over", self.over), ("weight", self.weight)) if v is not None}


def apply(d: Decisions, m: Mutation) -> Decisions:
    """The document after a mutation (version bookkeeping is the caller's)."""
    if m.action == "strategy":
        if m.strategy is None:
            raise ValueError("strategy: no strategy named")
        return replace(d, strategy=m.strategy)
    rid = m.region
    if rid is None:
        raise ValueError(f"{m.action}: no region named")
    if m.action == "drain":
        if m.started is None or m.over is None:
            raise ValueError("drain: needs started and over")
        return replace(d, drains={**d.drains, rid: Drain(m.started, m.over)})
    if m.action == "disable":
        return replace(d, disabled=d.disabled | {rid})
    if m.action == "enable":  # back into rotation: clears both a disable and a drain
        return replace(d, disabled=d.disabled - {rid}, drains={k: v for k, v in d.drains.items() if k != rid})
    if m.action == "weight":
        if m.weight is None:
            raise ValueError("weight: no weight given")
        return replace(d, weights={**d.weights, rid: m.weight})
    raise ValueError(f"unknown action {m.action!r}")


def committed(d: Decisions, by: str, at: float) -> Decisions:
    """The next version of a document, stamped with who changed it and when."""
    return replace(d, version=d.version + 1, epoch=d.epoch or new_epoch(), by=by, at=at)


def new_epoch() -> str:
    return uuid.uuid4().hex[:12]


def not_enabled(d: Decisions, regions: Iterable[str], local_disabled: frozenset[str] = frozenset()) -> dict[str, str]:
    """Regions out of rotation by an operator's decision, and why."""
    out = {}
    for rid in regions:
        if rid in d.disabled or rid in local_disabled:
            out[rid] = "disabled" if rid in d.disabled else "disabled locally"
        elif rid in d.drains:
            out[rid] = "draining"
    return out


def guard(d: Decisions, regions: tuple[str, ...], local_disabled: frozenset[str] = frozenset()) -> None:
    """Raise Conflict when no region of `regions` is left enabled."""
    out = not_enabled(d, regions, local_disabled)
    if regions and len(out) == len(regions):
        raise Conflict(out)


def drain_factor(drain: Drain | None, now_wall: float) -> float:
    """Share of a region's weight left: 1 -> 0 linearly over the drain."""
    if drain is None:
        return 1.0
    if drain.over <= 0:
        return 0.0
    left = 1.0 - (now_wall - drain.started) / drain.over
    return min(1.0, max(0.0, left))


# -- the wire/file form ------------------------------------------------------------

def encode(d: Decisions) -> bytes:
    return orjson.dumps({
        "version": d.version, "epoch": d.epoch, "by": d.by, "at": d.at,
        "strategy": d.strategy, "disabled": sorted(d.disabled),
        "drains": {r: {"started": x.started, "over": x.over} for r, x in sorted(d.drains.items())},
        "weights": dict(sorted(d.weights.items())),
    })


def decode(raw: bytes | str) -> Decisions:
    """The document from its JSON form; ValueError when it is not one."""
    try:
        doc = orjson.loads(raw)
        return Decisions(
            strategy=str(doc["strategy"]),
            disabled=frozenset(map(str, doc.get("disabled", ()))),
            drains=MappingProxyType({str(r): Drain(float(x["started"]), float(x["over"]))
                                     for r, x in doc.get("drains", {}).items()}),
            weights=MappingProxyType({str(r): float(w) for r, w in doc.get("weights", {}).items()}),
            version=int(doc.get("version", 0)), epoch=str(doc.get("epoch", "")),
            by=str(doc.get("by", "")), at=float(doc.get("at", 0.0)),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a decisions document: {exc}") from None
