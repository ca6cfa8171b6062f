"""The one timer the benchmarks share: the median of repeated runs, in milliseconds
(medians, because the machines are shared and noisy)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms(func: Callable[[], object], repeat: int, warm: bool = False) -> float:
    """Median wall-clock time of ``func`` over ``repeat`` runs; with ``warm``, one untimed
    run first so lazy imports and caches are not counted."""
    if warm:
        func()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)
