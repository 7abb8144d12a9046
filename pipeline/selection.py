"""Which model of a task is the best: on the validation metric only, with ties.

Two models whose validation metrics differ by less than `tie_rtol` of the best one's tie (the
report's `report.tie_rtol`): such a difference does not repeat from one host, or one seed, to
the next. Of tied models the one with fewer parameters wins, then the name, so that the same
figures always give the same order (and the registry the same aliases).
"""

from __future__ import annotations


def ties(a: float, b: float, tie_rtol: float) -> bool:
    """Whether two validation figures are within `tie_rtol` of the larger in magnitude."""
    return abs(a - b) <= tie_rtol * max(abs(a), abs(b))


def ranking(scores: dict[str, float], params: dict[str, int], maximize: bool, tie_rtol: float) -> list[str]:
    """The models, best first. The first is the smallest of those that tie with the best score;
    then the same rule over the rest."""
    left, order = dict(scores), []
    while left:
        best = (max if maximize else min)(left.values())
        tied = [m for m, score in left.items() if ties(score, best, tie_rtol)]
        first = min(tied, key=lambda m: (params[m], m))
        order.append(first)
        del left[first]
    return order
