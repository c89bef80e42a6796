"""Progress of a long sweep: a bar, the count, the time spent and an estimate of the time left.

    progress = Progress(weights=[flops_of(shape) for shape in shapes], label="forward grid")
    for shape in shapes:
        ...
        print(progress.advance(), "one line about this item")

The estimate weighs each item by the work it is expected to take (FLOPs, say),
so a sweep whose last items are the longest does not promise too early an end:
time left = time so far x (work left / work done).
"""
from __future__ import annotations

import time


def format_seconds(seconds: float) -> str:
    """42 s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts finished items of a sweep and estimates the time left from their weights."""

    def __init__(self, total: int | None = None, weights=None, label: str = "", width: int = 20,
                 clock=time.time):
        if weights is None:
            weights = [1.0] * (total or 0)
        self.weights = [float(w) for w in weights]
        self.total = len(self.weights)
        self.label = label
        self.width = width
        self.clock = clock
        self.started = clock()
        self.done = 0

    def advance(self) -> str:
        """Mark one more item finished; return the progress line to print before its result."""
        self.done = min(self.done + 1, self.total)
        return self.line()

    def line(self) -> str:
        """``[######......] 12/40 forward grid, 1m10s, about 3m20s left``."""
        elapsed = self.clock() - self.started
        work = sum(self.weights)
        done_work = sum(self.weights[:self.done])
        filled = int(self.width * done_work / work) if work else self.width
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total}" + (f" {self.label}" if self.label else "")
        text += f", {format_seconds(elapsed)}"
        if self.done < self.total and done_work > 0:
            text += f", about {format_seconds(elapsed * (work - done_work) / done_work)} left"
        elif self.done >= self.total:
            text += ", done"
        return text
