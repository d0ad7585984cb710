"""Output staged per checkpoint epoch: the two-phase commit of file sinks."""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO


class StagedLines:
    """Lines staged per checkpoint epoch in ``folder`` as ``TAG.EPOCH`` files.

    ``write`` appends to ``TAG.open``; ``seal(epoch)`` renames it ``TAG.EPOCH`` and
    returns the sealed epochs not yet published (the checkpoint keeps that list);
    ``commit(epoch)`` publishes and deletes the sealed files up to ``epoch``;
    ``recover(sealed)`` publishes what a restored checkpoint sealed and deletes every
    other staged file of the tag.
    """

    def __init__(self, folder: Path, tag: str) -> None:
        self.folder, self.tag = folder, tag
        self.folder.mkdir(parents=True, exist_ok=True)
        self._open: TextIO | None = None
        self._sealed: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def _path(self, suffix: str) -> Path:
        return self.folder / f"{self.tag}.{suffix}"

    def write(self, lines: list[str]) -> None:
        if self._open is None:
            self._open = open(self._path("open"), "w", encoding="utf-8")  # noqa: SIM115
        self._open.writelines(lines)

    def seal(self, epoch: int) -> list[tuple[int, str]]:
        with self._lock:
            if self._open is not None:
                self._open.close()
                self._open = None
                name = f"{epoch:020d}"
                os.replace(self._path("open"), self._path(name))
                self._sealed.append((epoch, name))
            return list(self._sealed)

    def commit(self, epoch: int, publish: Callable[[BinaryIO], None]) -> None:
        with self._lock:
            while self._sealed and self._sealed[0][0] <= epoch:
                _, name = self._sealed[0]
                self._publish_file(self._path(name), publish)
                self._sealed.pop(0)

    @staticmethod
    def _publish_file(path: Path, publish: Callable[[BinaryIO], None]) -> None:
        try:
            staged = path.open("rb")
        except FileNotFoundError:
            return  # published before the checkpoint was restored
        with staged:
            publish(staged)
        path.unlink()

    def recover(
        self, sealed: list[tuple[int, str]], publish: Callable[[BinaryIO], None]
    ) -> None:
        for _, name in sealed:
            self._publish_file(self._path(name), publish)
        for stale in self.folder.glob(f"{glob.escape(self.tag)}.*"):
            stale.unlink()

    def close(self) -> None:
        with self._lock:
            if self._open is not None:
                self._open.close()
                self._open = None
