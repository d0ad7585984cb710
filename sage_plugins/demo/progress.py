"""Progress bars of the demo, driven by the running job's live operator counters.

A bar shows what an operator has really finished (``items_out`` of its replicas, from
``JobHandle.metrics()``), polled while the job runs and read once more when it ends:
chunks embedded while indexing, questions answered while answering. Libraries that
draw bars of their own (transformers, huggingface_hub) are told not to, so only the
demo's bars move on the terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

#: seconds between two reads of the job's counters (and between two redraws)
POLL_S = 0.1

Count = Callable[[dict[str, Any]], tuple[int, int | None]]
"""A job's metrics (``operators`` and ``replicas``) -> (done, total or None while
unknown)."""


def quiet_library_bars() -> None:
    """Turn off the progress bars of huggingface_hub and transformers (model loading,
    downloads), so they do not interleave with the demo's bars."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transformers = sys.modules.get("transformers")
    if transformers is not None:  # imported before the variable was set
        transformers.utils.logging.disable_progress_bar()


def items_out(metrics: dict[str, Any], operator: str) -> int:
    """Items ``operator`` has emitted so far (0 before its first replica reports)."""
    return int(metrics["operators"].get(operator, {}).get("items_out", 0))


def finished(metrics: dict[str, Any], operator: str) -> bool:
    """True once every replica running ``operator`` has finished."""
    states = [
        replica["state"]
        for replica in metrics["replicas"].values()
        if operator in replica["operators"]
    ]
    return bool(states) and all(state == "finished" for state in states)


def follow(handle: Any, count: Count, *, desc: str, unit: str) -> Any:
    """Wait for ``handle``'s job, drawing a bar of ``count`` as it runs (on stderr).

    Returns the job's result (``handle.wait()``).
    """
    _, total = count(handle.metrics())
    with tqdm(
        desc=desc,
        unit=unit,
        total=total,
        file=sys.stderr,
        dynamic_ncols=True,
        # redraw on every change the poll finds (tqdm's adaptive skipping would hide
        # the steps after a large one)
        miniters=1,
        mininterval=POLL_S,
    ) as bar:

        def show() -> None:
            done, total = count(handle.metrics())
            if total is not None and total != bar.total:
                bar.total = total
                bar.refresh()
            if done > bar.n:
                bar.update(done - bar.n)

        while handle.status() == "running":
            show()
            time.sleep(POLL_S)
        result = handle.wait()
        show()
    return result
