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
