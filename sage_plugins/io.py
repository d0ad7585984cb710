"""Built-in sources and sinks.

Sources: ``collection`` (items given in config), ``range``, ``jsonl`` (one JSON value
per line), ``text-lines``. Every source replica reads its share: replica ``r`` of
``p`` takes items ``r, r+p, r+2p, ...``.

Sinks: ``jsonl`` (one JSON value per line; replicas of one job share the file),
``print`` (to stdout or stderr), ``collect`` (items handed back in the job result).

With checkpoints on, every source seeks to its checkpointed offset on a restore, and
the ``jsonl`` and ``collect`` sinks are exactly-once: ``jsonl`` stages each
checkpoint epoch's lines in ``PATH.pending/JOB/`` and appends them to ``PATH`` once
the checkpoint is committed; ``collect`` keeps its items in the checkpoint.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TextIO

from sage_core import hookimpl
from sage_core.common.errors import SageError
from sage_core.contract import Contract
from sage_core.functions import ByRole, OperatorContext, SinkFunction, SourceFunction
from sage_plugins.serving import HttpRequestSource, HttpResponseSink
from sage_plugins.staged import StagedLines


class InputFileError(SageError, ValueError):
    """A source file is missing or has a malformed line (named with its number)."""


def _share(
    items: Iterable[Any], context: OperatorContext, offset: int = 0
) -> Iterator[Any]:
    """Replica ``r`` of ``p``'s items ``r, r+p, ...`` after its first ``offset``."""
    p = context.parallelism
    return itertools.islice(items, context.replica_index + offset * p, None, p)


class CollectionSource(SourceFunction):
    """The items of ``items`` (a list given in config)."""

    def __init__(self, *, items: Iterable[Any] = ()) -> None:
        super().__init__(items=items)
        self.items = items if isinstance(items, (list, tuple, range)) else list(items)

    def run(self, context: OperatorContext) -> Iterable[Any]:
        return self.run_from(context, 0)

    def run_from(self, context: OperatorContext, offset: int) -> Iterable[Any]:
        if isinstance(self.items, (list, tuple, range)):
            p = context.parallelism
            return self.items[context.replica_index + offset * p :: p]
        return _share(self.items, context, offset)


class RangeSource(SourceFunction):
    """Integers ``start, start+step, ... < stop``."""

    def __init__(self, *, stop: int, start: int = 0, step: int = 1) -> None:
        super().__init__(start=start, stop=stop, step=step)
        if step == 0:
            raise ValueError("range step must not be 0")
        self.range = range(start, stop, step)

    def run(self, context: OperatorContext) -> Iterable[int]:
        return self.run_from(context, 0)

    def run_from(self, context: OperatorContext, offset: int) -> Iterable[int]:
        p = context.parallelism
        return self.range[context.replica_index + offset * p :: p]


def _check_input(path: str, context: OperatorContext) -> None:
    """Fail before any item moves when the input file is not there."""
    if not Path(path).is_file():
        what = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
        raise InputFileError(
            f"input file {path} {what} (operator {context.operator!r}, config "
            f"'path'). Check the path: a relative one is taken from the spec "
            f"file's directory, or in Python from the current directory "
            f"({Path.cwd()})"
        )


def _open_lines(path: str, encoding: str) -> Iterator[tuple[int, str]]:
    try:
        handle = open(path, encoding=encoding)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputFileError(f"cannot open {path}: {exc.strerror}") from None
    with handle:
        yield from enumerate(handle, start=1)


class TextLinesSource(SourceFunction):
    """Lines of a text file, without their line ending.

    Config: ``path``; ``skip_empty`` (False) drops empty lines; ``encoding``.
    """

    path_config = ("path",)

    def __init__(
        self, *, path: str, skip_empty: bool = False, encoding: str = "utf-8"
    ) -> None:
        super().__init__(path=path, skip_empty=skip_empty, encoding=encoding)
        self.path, self.skip_empty, self.encoding = str(path), skip_empty, encoding

    def open(self, context: OperatorContext) -> None:
        _check_input(self.path, context)

    def run(self, context: OperatorContext) -> Iterable[str]:
        return self.run_from(context, 0)

    def run_from(self, context: OperatorContext, offset: int) -> Iterable[str]:
        lines = (
            line.rstrip("\r\n") for _, line in _open_lines(self.path, self.encoding)
        )
        if self.skip_empty:
            lines = (line for line in lines if line)
        return _share(lines, context, offset)


class JsonlSource(SourceFunction):
    """One JSON value per line of ``path`` (blank lines are skipped)."""

    path_config = ("path",)

    def __init__(self, *, path: str, encoding: str = "utf-8") -> None:
        super().__init__(path=path, encoding=encoding)
        self.path, self.encoding = str(path), encoding

    def open(self, context: OperatorContext) -> None:
        _check_input(self.path, context)

    def _values(self, lines: Iterable[tuple[int, str]]) -> Iterator[Any]:
        for number, line in lines:
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise InputFileError(
                    f"{self.path}:{number}: not a JSON value ({exc.msg})"
                ) from None

    def run(self, context: OperatorContext) -> Iterable[Any]:
        return self.run_from(context, 0)

    def run_from(self, context: OperatorContext, offset: int) -> Iterable[Any]:
        lines = (
            (n, line)
            for n, line in _open_lines(self.path, self.encoding)
            if line.strip()
        )
        return self._values(_share(lines, context, offset))


class _SharedFile:
    """A file opened once per (job, path) and shared by that job's sink replicas."""

    _lock = threading.Lock()
    _open: ClassVar[dict[tuple[str, str], list[Any]]] = {}

    @classmethod
    def acquire(
        cls, job: str, path: str, append: bool
    ) -> tuple[TextIO, threading.Lock]:
        with cls._lock:
            entry = cls._open.get((job, path))
            if entry is None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                handle = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
                entry = [handle, threading.Lock(), 0]
                cls._open[job, path] = entry
            entry[2] += 1
            return entry[0], entry[1]

    @classmethod
    def release(cls, job: str, path: str) -> None:
        with cls._lock:
            entry = cls._open.get((job, path))
            if entry is None:
                return
            entry[2] -= 1
            if entry[2] == 0:
                entry[0].close()
                del cls._open[job, path]


class JsonlSink(SinkFunction):
    """Writes each item as one JSON line to ``path`` (``append`` keeps old lines).

    Items that are not JSON-serialisable fail the item (named in the error). With
    checkpoints on, lines are staged per checkpoint epoch and appended on commit
    (exactly-once; see the module docstring)."""

    contract = Contract(batch_size=4096)
    path_config = ("path",)

    def __init__(self, *, path: str, append: bool = False) -> None:
        super().__init__(path=path, append=append)
        self.path, self.append = str(path), append
        self._job = ""
        self._handle: TextIO | None = None
        self._lock = threading.Lock()
        self._stage: StagedLines | None = None
        self._recovered: list[tuple[int, str]] | None = None
        self._closing = threading.Lock()  # commit() may run on another thread

    def open(self, context: OperatorContext) -> None:
        self._job = f"{context.job_id}/{context.operator}"
        append = self.append or self._recovered is not None
        self._handle, self._lock = _SharedFile.acquire(self._job, self.path, append)
        if context.checkpointing or self._recovered is not None:
            stage = StagedLines(
                Path(f"{self.path}.pending") / context.job_id,
                f"{context.operator}-{context.replica_index}",
            )
            stage.recover(self._recovered or [], self._publish)
            self._stage = stage if context.checkpointing else None

    def _publish(self, staged: BinaryIO) -> None:
        assert self._handle is not None, "sink used before open()"
        with self._lock:
            self._handle.flush()
            shutil.copyfileobj(staged, self._handle.buffer, 1 << 20)
            self._handle.buffer.flush()

    def sink_batch(self, items: list[Any]) -> None:
        lines = [json.dumps(item, ensure_ascii=False) + "\n" for item in items]
        if self._stage is not None:
            self._stage.write(lines)
            return
        assert self._handle is not None, "sink used before open()"
        with self._lock:
            self._handle.writelines(lines)

    def sink(self, item: Any) -> None:
        self.sink_batch([item])

    def snapshot_state(self, epoch: int) -> Any:
        return None if self._stage is None else self._stage.seal(epoch)

    def restore_state(self, state: Any) -> None:
        self._recovered = list(state or [])

    def commit(self, epoch: int) -> None:
        with self._closing:
            if self._stage is not None and self._handle is not None:
                self._stage.commit(epoch, self._publish)

    def close(self) -> None:
        with self._closing:
            if self._stage is not None:
                self._stage.close()
            if self._handle is not None:
                with self._lock:
                    self._handle.flush()
                _SharedFile.release(self._job, self.path)
                self._handle = None


_PRINT_LOCK = threading.Lock()


class PrintSink(SinkFunction):
    """Writes each item on its own line to ``stream`` (stdout/stderr).

    Config: ``format`` = ``"str"`` (default) or ``"json"``; ``prefix``.
    """

    contract = Contract(batch_size=4096)

    def __init__(
        self, *, stream: str = "stdout", format: str = "str", prefix: str = ""
    ) -> None:
        super().__init__(stream=stream, format=format, prefix=prefix)
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
        if format not in ("str", "json"):
            raise ValueError(f"format must be 'str' or 'json', got {format!r}")
        self.stream, self.format, self.prefix = stream, format, prefix

    def sink_batch(self, items: list[Any]) -> None:
        render = json.dumps if self.format == "json" else str
        text = "".join(f"{self.prefix}{render(item)}\n" for item in items)
        out = sys.stdout if self.stream == "stdout" else sys.stderr
        with _PRINT_LOCK:
            out.write(text)
            out.flush()

    def sink(self, item: Any) -> None:
        self.sink_batch([item])


class CollectSink(SinkFunction):
    """Keeps the items; the job result hands them back (``result.collected()``)."""

    contract = Contract(batch_size=4096)

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Any] = []

    def sink_batch(self, items: list[Any]) -> None:
        self.items.extend(items)

    def sink(self, item: Any) -> None:
        self.items.append(item)

    def snapshot_state(self, epoch: int) -> list[Any]:
        return self.items

    def restore_state(self, state: Any) -> None:
        self.items = list(state)

    def result(self) -> list[Any]:
        return self.items


@hookimpl
def register_operators(register: Any) -> None:
    for name, cls in (
        ("collection", CollectionSource),
        ("range", RangeSource),
        ("text-lines", TextLinesSource),
        ("http-request", HttpRequestSource),
    ):
        register(name, cls, role="source", description=cls.__doc__)
    for name, cls in (
        ("print", PrintSink),
        ("collect", CollectSink),
        ("http-response", HttpResponseSink),
    ):
        register(name, cls, role="sink", description=cls.__doc__)
    register(
        "jsonl",
        ByRole(source=JsonlSource, sink=JsonlSink),
        description="JSON lines: a source reading a file, a sink writing one",
    )
