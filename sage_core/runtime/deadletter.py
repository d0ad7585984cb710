"""The dead-letter sink: where failing items go when ``on_error="dead-letter"``.

Each record names the operator, replica, item sequence, the item and the traceback.
Records are kept in the job result and, when the plan's settings name a sink plugin
(``dead_letter_sink``, e.g. ``"jsonl"`` with ``{"path": ...}``), written to it too.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from sage_core.compiler.plan import ExecutionPlan, OperatorPlan
from sage_core.functions import OperatorContext, SinkFunction
from sage_core.graph.model import OperatorRef
from sage_core.runtime.operators import build_function, format_error

logger = logging.getLogger(__name__)


def _portable(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its item as ``repr`` when the item is not JSON data."""
    try:
        json.dumps(record["item"])
    except (TypeError, ValueError):
        return {**record, "item": repr(record["item"])}
    return record


class DeadLetters:
    """Thread-safe collector of dead-letter records for one job."""

    def __init__(self, plan: ExecutionPlan, job_id: str) -> None:
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._sink: SinkFunction | None = None
        name = plan.settings.dead_letter_sink
        if name:
            op = OperatorPlan(
                name="dead-letter",
                role="sink",
                ref=OperatorRef("plugin", name),
                config=dict(plan.settings.dead_letter_config),
                parallelism=1,
                contract=plan.operators[0].contract.merged({}),
            )
            sink = build_function(op)
            assert isinstance(sink, SinkFunction)
            sink.open(OperatorContext("dead-letter", 0, 1, job_id, "local", op.config))
            self._sink = sink

    def for_replica(
        self, replica: str
    ) -> Callable[[str, Any, BaseException, int], None]:
        def put(operator: str, item: Any, exc: BaseException, sequence: int) -> None:
            record = {
                "operator": operator,
                "replica": replica,
                "sequence": sequence,
                "item": item,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": format_error(exc),
            }
            logger.warning(
                "dead-lettered item #%d of %s (%s): %s",
                sequence,
                operator,
                replica,
                record["error"],
            )
            with self._lock:
                self._records.append(record)
                if self._sink is not None:
                    self._sink.sink_batch([_portable(record)])

        return put

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        with self._lock:
            if self._sink is not None:
                self._sink.close()
                self._sink = None


def write_dead_letters(
    plan: ExecutionPlan, job_id: str, records: list[dict[str, Any]]
) -> None:
    """Write ``records`` collected elsewhere (a Dask job's replicas) to the plan's
    dead-letter sink, if it names one."""
    name = plan.settings.dead_letter_sink
    if not name or not records:
        return
    import dataclasses

    op = dataclasses.replace(
        plan.operators[-1],
        name="dead-letter",
        role="sink",
        ref=OperatorRef("plugin", name),
        config=dict(plan.settings.dead_letter_config),
        parallelism=1,
    )
    sink = build_function(op)
    assert isinstance(sink, SinkFunction)
    sink.open(OperatorContext("dead-letter", 0, 1, job_id, "client", op.config))
    try:
        sink.sink_batch([_portable(r) for r in records])
    finally:
        sink.close()
