"""What a training run says between epochs: its time left, which the epoch's progress bar
cannot give (its ETA is the epoch's, and a run is tens of epochs)."""
from __future__ import annotations

import time


def run_left(t0: float, epochs_done: int, epochs_left: int) -> str:
    """About how long the run's `epochs_left` epochs will take, at the mean time of the
    `epochs_done` epochs this process ran since `t0` (a resumed run's earlier epochs, run by
    another process, perhaps on another machine, are not counted)."""
    if epochs_left <= 0:
        return "no epoch left"
    seconds = (time.time() - t0) / max(1, epochs_done) * epochs_left
    minutes = round(seconds / 60)
    if minutes < 1:
        clock = "under a minute"
    else:
        clock = "about " + (f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min")
    return f"{epochs_left} epoch{'s' if epochs_left != 1 else ''} left, {clock}"
