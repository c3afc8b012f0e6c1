"""Approved ceilings: what the last approval of a client granted, and whether a renewal stays inside it.

The lowest layer that needs these rules, so every layer above reads the same ones: the default TTL
ceiling per risk tier (DESIGN.md "Policy"; the policy engine's defaults, the lifecycle's fallback and the
reports all use :data:`DEFAULT_TTL_CEILINGS`), and the comparison of a renewal with the ceiling a client
carries (``Client.ceiling_scopes`` / ``ceiling_ttl_seconds`` / ``ceiling_audiences``, set by whatever
approves: policy auto-approval, the final human approval, an approved renewal).

Pure: no Django import, so the policy engine (itself pure) can import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

# Seconds a client of each tier may live per approval or renewal unless the active policy says otherwise.
DEFAULT_TTL_CEILINGS: dict[str, int] = {"low": 86400, "medium": 7 * 86400, "high": 86400}


def default_ttl_ceiling(risk_tier: str) -> int:
    """The default ceiling for ``risk_tier``; an unknown tier gets the strictest one."""
    return DEFAULT_TTL_CEILINGS.get(str(risk_tier), min(DEFAULT_TTL_CEILINGS.values()))


def duration(seconds: int) -> str:
    """``3600`` -> ``1h``, ``604800`` -> ``7d``, ``90`` -> ``90s``: for messages people read."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class Excess(NamedTuple):
    """One way a renewal goes beyond the approved ceiling: a stable code and a message."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ceiling:
    """What the last approval granted: scopes, lifetime per renewal, service boundary (audiences)."""

    scopes: frozenset[str]
    ttl_seconds: int
    audiences: frozenset[str]

    @classmethod
    def of(
        cls, *, scopes: Iterable[str] | None, ttl_seconds: int | None, audiences: Iterable[str] | None
    ) -> Ceiling | None:
        """The ceiling stored on a client, or None when no approval is on record."""
        if scopes is None or not ttl_seconds:
            return None
        return cls(scopes=frozenset(scopes), ttl_seconds=int(ttl_seconds), audiences=frozenset(audiences or ()))

    def excesses(self, *, scopes: Iterable[str], ttl_seconds: int, audiences: Iterable[str]) -> list[Excess]:
        """How a renewal with these values goes beyond this ceiling ([] when it stays inside)."""
        out: list[Excess] = []
        if ttl_seconds > self.ttl_seconds:
            out.append(
                Excess(
                    "beyond_approved_ttl",
                    f"asks for {duration(ttl_seconds)}; the last approval granted "
                    f"{duration(self.ttl_seconds)} per renewal",
                )
            )
        wider = sorted(set(scopes) - self.scopes)
        if wider:
            out.append(
                Excess("beyond_approved_scopes", "holds scopes the last approval did not grant: " + ", ".join(wider))
            )
        outside = sorted(set(audiences) - self.audiences)
        if outside:
            out.append(
                Excess(
                    "beyond_approved_audiences",
                    "reaches audiences the last approval did not grant: " + ", ".join(outside),
                )
            )
        return out

    def to_dict(self) -> dict:
        return {"scopes": sorted(self.scopes), "ttl_seconds": self.ttl_seconds, "audiences": sorted(self.audiences)}
