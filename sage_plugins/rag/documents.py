"""Document sources (``jsonl-documents``, ``text-documents``) and the ``chunk`` splitter.

Sources emit ``{"id", "text", "meta"}`` dicts; replica ``r`` of ``p`` takes documents
``r, r+p, ...``. A malformed line or unreadable file fails the job with its location
by default (``on_bad_record="fail"``); with ``"dead-letter"`` it is written, with the
reason, to the JSON-lines file ``dead_letter`` and counted in the log — never dropped
silently. A corpus with no usable document raises :class:`EmptyCorpusError`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sage_core.contract import Contract
from sage_core.functions import FlatMapFunction, OperatorContext, SourceFunction
from sage_plugins.rag.common import RagError, text_of
from sage_plugins.rag.text import approx_tokens, split_sentences

logger = logging.getLogger(__name__)
_dead_letter_lock = threading.Lock()


class MalformedDocumentError(RagError, ValueError):
    """A document record is not usable (bad JSON, no text); names file and line."""


class EmptyCorpusError(RagError):
    """A document source found no usable document."""


class _DocumentSource(SourceFunction):
    """Shared bad-record handling of the document sources."""

    path_config = ("path", "dead_letter")

    def __init__(
        self, *, on_bad_record: str = "fail", dead_letter: str | None = None, **cfg: Any
    ) -> None:
        super().__init__(on_bad_record=on_bad_record, dead_letter=dead_letter, **cfg)
        if on_bad_record not in ("fail", "dead-letter"):
            raise RagError(
                f"on_bad_record must be 'fail' or 'dead-letter', got {on_bad_record!r}"
            )
        if on_bad_record == "dead-letter" and not dead_letter:
            raise RagError(
                "on_bad_record='dead-letter' needs dead_letter=PATH (a JSON-lines "
                "file receiving the bad records)"
            )
        self.on_bad_record = on_bad_record
        self.dead_letter = dead_letter
        self.bad_records = 0

    def _bad(self, where: str, reason: str, raw: str) -> None:
        if self.on_bad_record == "fail":
            raise MalformedDocumentError(f"{where}: {reason}")
        self.bad_records += 1
        record = {"where": where, "error": reason, "record": raw[:10_000]}
        assert self.dead_letter is not None
        Path(self.dead_letter).parent.mkdir(parents=True, exist_ok=True)
        with _dead_letter_lock, open(self.dead_letter, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _emit(
        self, docs: Iterable[dict[str, Any] | None], context: OperatorContext, what: str
    ) -> Iterator[dict[str, Any]]:
        """This replica's share of ``docs`` (None marks a bad record); raises
        EmptyCorpusError at the end if the whole corpus had no document."""
        total = 0
        for doc in docs:
            if doc is None:
                continue
            if total % context.parallelism == context.replica_index:
                yield doc
            total += 1
        if self.bad_records:
            logger.warning(
                "%s: %d bad records written to %s",
                what,
                self.bad_records,
                self.dead_letter,
            )
        if total == 0:
            raise EmptyCorpusError(
                f"{what} holds no usable document"
                + (f" ({self.bad_records} bad records)" if self.bad_records else "")
            )


class JsonlDocuments(_DocumentSource):
    """Documents from a JSON-lines file: one object per line.

    Config: ``path``; ``text_field`` ("text"); ``id_field`` ("id"; default id
    ``"<file>:<line>"``); ``meta_fields`` (default: every other field; a list keeps
    those); ``on_bad_record`` / ``dead_letter`` (see the module); ``encoding``.
    """

    def __init__(
        self,
        *,
        path: str,
        text_field: str = "text",
        id_field: str = "id",
        meta_fields: list[str] | None = None,
        encoding: str = "utf-8",
        **bad: Any,
    ) -> None:
        super().__init__(
            path=str(path),
            text_field=text_field,
            id_field=id_field,
            meta_fields=meta_fields,
            encoding=encoding,
            **bad,
        )
        self.path, self.encoding = str(path), encoding
        self.text_field, self.id_field = text_field, id_field
        self.meta_fields = meta_fields

    def _records(self) -> Iterator[dict[str, Any] | None]:
        try:
            handle = open(self.path, encoding=self.encoding)  # noqa: SIM115
        except OSError as exc:
            raise RagError(f"cannot open {self.path}: {exc.strerror}") from None
        name = os.path.basename(self.path)
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}:{number}"
                try:
                    value = json.loads(line)
                except ValueError as exc:
                    self._bad(where, f"not JSON ({exc.msg})", line)
                    yield None
                    continue
                text = value.get(self.text_field) if isinstance(value, dict) else None
                if not isinstance(text, str) or not text.strip():
                    self._bad(
                        where, f"no non-empty string field {self.text_field!r}", line
                    )
                    yield None
                    continue
                meta = {
                    k: v
                    for k, v in value.items()
                    if k not in (self.text_field, self.id_field)
                    and (self.meta_fields is None or k in self.meta_fields)
                }
                doc_id = value.get(self.id_field, f"{name}:{number}")
                yield {"id": str(doc_id), "text": text, "meta": meta}

    def run(self, context: OperatorContext) -> Iterable[dict[str, Any]]:
        return self._emit(self._records(), context, self.path)


class TextDocuments(_DocumentSource):
    """One document per text file under ``path`` (a file or a directory).

    Config: ``path``; ``patterns`` (["*.md", "*.txt"], searched recursively);
    ``encoding``; ``on_bad_record`` / ``dead_letter``. The id is the path relative
    to ``path``; ``meta`` has ``source`` and ``title`` (first Markdown heading or the
    file name).
    """

    def __init__(
        self,
        *,
        path: str,
        patterns: list[str] | None = None,
        encoding: str = "utf-8",
        **bad: Any,
    ) -> None:
        super().__init__(path=str(path), patterns=patterns, encoding=encoding, **bad)
        self.path = Path(path)
        self.patterns = patterns or ["*.md", "*.txt"]
        self.encoding = encoding

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise RagError(f"{self.path} is neither a file nor a directory")
        found = {
            p for pat in self.patterns for p in self.path.rglob(pat) if p.is_file()
        }
        return sorted(found)

    def _records(self) -> Iterator[dict[str, Any] | None]:
        base = self.path if self.path.is_dir() else self.path.parent
        for file in self._files():
            try:
                text = file.read_text(encoding=self.encoding)
            except (OSError, UnicodeDecodeError) as exc:
                self._bad(str(file), f"unreadable ({exc})", "")
                yield None
                continue
            if not text.strip():
                self._bad(str(file), "empty file", "")
                yield None
                continue
            rel = str(file.relative_to(base))
            title = next(
                (
                    ln.lstrip("#").strip()
                    for ln in text.splitlines()
                    if ln.startswith("#")
                ),
                file.stem,
            )
            yield {"id": rel, "text": text, "meta": {"source": rel, "title": title}}

    def run(self, context: OperatorContext) -> Iterable[dict[str, Any]]:
        return self._emit(self._records(), context, str(self.path))


class Chunk(FlatMapFunction):
    """Splits each document into chunks of at most ``max_tokens`` tokens.

    Chunks end at sentence boundaries where possible (a sentence longer than the
    limit is split between words) and repeat up to ``overlap`` tokens of the
    previous chunk's last sentences. Output: ``{"id": "<doc>#<n>", "doc_id", "text",
    "meta": {..., "chunk": n}}``. Token counts are approximate (see ``text.py``).
    """

    contract = Contract(batch_size=64)

    def __init__(
        self, *, max_tokens: int = 200, overlap: int = 0, field: str = "text"
    ) -> None:
        super().__init__(max_tokens=max_tokens, overlap=overlap, field=field)
        if max_tokens < 8:
            raise RagError(f"chunk: max_tokens must be >= 8, got {max_tokens}")
        if not 0 <= overlap < max_tokens:
            raise RagError(f"chunk: overlap must be in [0, max_tokens), got {overlap}")
        self.max_tokens, self.overlap, self.field = max_tokens, overlap, field

    def _pieces(self, text: str) -> Iterator[tuple[str, int]]:
        """Sentences with token counts, over-long ones cut between words."""
        for sentence in split_sentences(text):
            n = approx_tokens(sentence)
            if n <= self.max_tokens:
                yield sentence, n
                continue
            part: list[str] = []
            size = 0
            for word in sentence.split():
                w = approx_tokens(word)
                if part and size + w > self.max_tokens:
                    yield " ".join(part), size
                    part, size = [], 0
                part.append(word)
                size += w
            if part:
                yield " ".join(part), size

    def split(self, text: str) -> list[str]:
        """The chunk texts of ``text``."""
        chunks: list[str] = []
        current: list[tuple[str, int]] = []
        size = 0
        fresh = 0  # sentences in ``current`` not carried over from the last chunk
        for piece, n in self._pieces(text):
            if current and size + n > self.max_tokens:
                chunks.append(" ".join(p for p, _ in current))
                carried: list[tuple[str, int]] = []
                kept = 0
                for p, m in reversed(current):
                    if kept + m > self.overlap or kept + m + n > self.max_tokens:
                        break
                    carried.insert(0, (p, m))
                    kept += m
                current, size, fresh = carried, kept, 0
            current.append((piece, n))
            size += n
            fresh += 1
        if current and fresh:
            chunks.append(" ".join(p for p, _ in current))
        return chunks

    def flat_map(self, item: Any) -> list[dict[str, Any]]:
        text = text_of(item, self.field, "chunk")
        doc = item if isinstance(item, dict) else {}
        doc_id = str(doc.get("id", ""))
        if not text.strip():
            raise RagError(f"chunk: document {doc_id!r} has empty text")
        meta = dict(doc.get("meta") or {})
        return [
            {
                "id": f"{doc_id}#{n}",
                "doc_id": doc_id,
                "text": chunk,
                "meta": {**meta, "chunk": n},
            }
            for n, chunk in enumerate(self.split(text))
        ]
