"""Progress reporting shared by the executors: a bar on stderr, or the caller's callback."""

from __future__ import annotations

import sys
from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]


def progress_callback(
    progress: ProgressCallback | bool | None, total: int
) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """The callback to report `(done, total)` to, and what closes it when the work is over."""
    if progress is None or progress is False:
        return None, lambda: None
    if callable(progress):
        return progress, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def bar_callback(
    description: str, *, total: int | None = None, unit: str = "seq", leave: bool = False
) -> ProgressCallback:
    """A tqdm bar on stderr as a `(done, total)` callback: drawn now when `total` is known, else at
    the first report; closed at the last."""
    from tqdm import tqdm

    def start(count: int) -> tqdm:
        return tqdm(total=count, desc=description, unit=unit, file=sys.stderr, leave=leave)

    bar = start(total) if total is not None else None

    def update(done: int, count: int) -> None:
        nonlocal bar
        if bar is None:
            bar = start(count)
        bar.update(done - bar.n)
        if done >= count:
            bar.close()

    return update
