"""Display filters shared by every app's templates: policy reasons and decision verbs, rendered one way.

Reasons are stored as ``{"code", "message"}`` dicts (older rows hold ``[code, message]`` pairs or bare
strings); every page renders them through ``templates/portal/_reasons.html`` so none prints a raw dict.
"""

from __future__ import annotations

from django import template

register = template.Library()

# Past tense of each decision kind (``approvals.choices.DecisionKind``); portal may not import approvals,
# so the two words live here, next to the only place they are displayed.
_DECISION_PAST = {"approve": "approved", "deny": "denied"}


def reason_messages(reasons) -> list[tuple[str, str]]:
    """Normalise stored policy reasons into ``(code, message)`` pairs."""
    out = []
    for reason in reasons or []:
        if isinstance(reason, dict):
            out.append((str(reason.get("code", "")), str(reason.get("message") or reason.get("code", ""))))
        elif isinstance(reason, list | tuple) and len(reason) >= 2:
            out.append((str(reason[0]), str(reason[1])))
        else:
            out.append(("", str(reason)))
    return out


@register.filter
def reason_pairs(reasons) -> list[tuple[str, str]]:
    """``{% for code, message in r.reasons|reason_pairs %}``."""
    return reason_messages(reasons)


@register.filter
def decision_past(kind) -> str:
    """``approve`` -> ``approved``, ``deny`` -> ``denied`` (not the ``denyd`` of ``kind|lower + 'd'``)."""
    return _DECISION_PAST.get(str(kind), str(kind))
