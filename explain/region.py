"""The smallest sufficient region: of a salient region's connected components, keep only
those whose deletion is needed to take the classifier's call away.

The method looks for the smallest region whose replacement removes the evidence
(Major et al.). An optimised mask, thresholded, can hold components the call does not
need: a bright glandular spot a reseed picked up while the lesion was still being shaped.
Removing them one at a time, while the rest's deletion still takes the call away, leaves
the region the method is after. Only forward passes are spent (one per component tried).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from scipy import ndimage


@dataclass
class Sufficient:
    region: np.ndarray   # bool, the kept components
    score_after: float   # the classifier's probability once they are deleted
    forwards: int        # forward passes spent trying components


def sufficient_region(region: np.ndarray, score_after: float, score_without: Callable[[np.ndarray], float],
                      threshold: float = 0.5, margin: Optional[float] = None, max_forwards: int = 20) -> Sufficient:
    """Remove components of `region` while deleting the rest still leaves the probability
    below `threshold` (and, with `margin`, at most the whole region's `score_after` + margin).

    Each round tries every kept component and removes the one whose removal leaves the lowest
    probability, so a component that carries the call is the last to go. score_without(region)
    is the probability once that region is deleted. A region of one component, or one whose
    deletion leaves the call standing, is returned as it is. Rounds stop before they would
    spend more than `max_forwards` passes (k components cost up to k(k+1)/2 - 1)."""
    labels, n = ndimage.label(region)
    if n < 2 or score_after >= threshold:
        return Sufficient(region, score_after, 0)
    ceiling = threshold if margin is None else min(threshold, score_after + margin)
    keep, after, forwards = list(range(1, n + 1)), score_after, 0
    while 1 < len(keep) <= max_forwards - forwards:
        trials = []
        for label in keep:
            rest = [k for k in keep if k != label]
            trials.append((score_without(np.isin(labels, rest)), rest))
            forwards += 1
        best, rest = min(trials, key=lambda t: t[0])
        if best >= ceiling:
            break
        keep, after = rest, best
    return Sufficient(np.isin(labels, keep), after, forwards)
