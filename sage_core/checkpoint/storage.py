"""Durable checkpoint storage on any fsspec file system.

Layout under ``checkpoint_dir`` (a local path or an fsspec URL such as
``s3://bucket/ckpt``)::

    JOB_ID/chk-000007/REPLICA.pkl     one snapshot per replica (pickled)
    JOB_ID/chk-000007/MANIFEST.json   written last: the checkpoint's commit

A checkpoint exists only once its manifest is there, so a checkpoint cut short by a
failure is never read. The manifest lists every snapshot with its size and SHA-256;
``latest()`` skips (with a warning) a checkpoint whose manifest or snapshots do not
check out and falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import posixpath
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sage_core.common.errors import SageError

logger = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
_CHK = re.compile(r"^chk-(\d+)$")


class CheckpointDirError(SageError, OSError):
    """The checkpoint directory cannot be reached or written."""


class CheckpointNotFound(SageError, LookupError):
    """A job to resume has no usable committed checkpoint."""


class CheckpointMismatch(SageError, ValueError):
    """A checkpoint does not fit the job restored from it (operators, parallelism)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A committed checkpoint: its epoch, directory and manifest."""

    epoch: int
    path: str
    manifest: Mapping[str, Any]

    @property
    def replicas(self) -> Mapping[str, Any]:
        """``{replica: {"file", "bytes", "sha256"}}``."""
        return self.manifest["replicas"]


def dumps(state: Any) -> bytes:
    """Serialise a snapshot (pickle; cloudpickle for what pickle refuses)."""
    try:
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle

        return bytes(cloudpickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


class CheckpointStore:
    """The checkpoints of one job under ``url``.

    Args:
        url: the checkpoint directory (local path or fsspec URL).
        job_id: the job; its checkpoints live in ``url/job_id``.
        retained: committed checkpoints kept (older ones are deleted).
    """

    def __init__(self, url: str, job_id: str, *, retained: int = 2) -> None:
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(str(url))
        except (ImportError, ValueError) as exc:
            raise CheckpointDirError(
                f"checkpoint_dir {url!r} cannot be opened: {exc}. Give a local path "
                f"or an fsspec URL whose file system is installed"
            ) from None
        self.url, self.job_id, self.retained = str(url), job_id, retained
        self.root = posixpath.join(root, job_id)

    def check(self) -> None:
        """Create the job's directory and write and delete a probe file.

        Raises:
            CheckpointDirError: the directory is unreachable or not writable.
        """
        probe = posixpath.join(self.root, f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            with self.fs.open(probe, "wb") as f:
                f.write(b"ok")
            self.fs.rm(probe)
        except Exception as exc:  # noqa: BLE001 - any backend error means unusable
            raise CheckpointDirError(
                f"checkpoint_dir {self.url!r} is not writable ({type(exc).__name__}: "
                f"{exc}). Point checkpoint_dir at a writable directory or URL"
            ) from None

    def _dir(self, epoch: int) -> str:
        return posixpath.join(self.root, f"chk-{epoch:06d}")

    def write(
        self, epoch: int, blobs: Mapping[str, bytes], meta: Mapping[str, Any]
    ) -> int:
        """Write one snapshot per replica, then the manifest; returns bytes written."""
        where = self._dir(epoch)
        self.fs.makedirs(where, exist_ok=True)
        replicas = {}
        for i, (replica, blob) in enumerate(sorted(blobs.items())):
            name = f"r{i:04d}.pkl"
            with self.fs.open(posixpath.join(where, name), "wb") as f:
                f.write(blob)
            replicas[replica] = {
                "file": name,
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        manifest = {
            "epoch": epoch,
            "job_id": self.job_id,
            "created": time.time(),
            "replicas": replicas,
            **dict(meta),
        }
        tmp = posixpath.join(where, f".{MANIFEST}.tmp")
        with self.fs.open(tmp, "w") as f:
            f.write(json.dumps(manifest))
        self.fs.mv(tmp, posixpath.join(where, MANIFEST))
        self.prune()
        return sum(len(b) for b in blobs.values())

    def epochs(self) -> list[int]:
        """Epochs with a checkpoint directory, committed or not, ascending."""
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            m = _CHK.match(posixpath.basename(str(name).rstrip("/")))
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def _committed(self, epoch: int) -> bool:
        return bool(self.fs.exists(posixpath.join(self._dir(epoch), MANIFEST)))

    def prune(self) -> None:
        """Delete committed checkpoints beyond ``retained`` and older partial ones."""
        epochs = self.epochs()
        committed = [e for e in epochs if self._committed(e)]
        keep = set(committed[-self.retained :]) if self.retained else set(committed)
        newest = committed[-1] if committed else -1
        for e in epochs:
            if e not in keep and e <= newest:
                self.fs.rm(self._dir(e), recursive=True)

    def open(self, epoch: int) -> Checkpoint:
        """The checkpoint of ``epoch``, verified.

        Raises:
            ValueError: its manifest or a snapshot is missing or corrupt.
        """
        where = self._dir(epoch)
        try:
            with self.fs.open(posixpath.join(where, MANIFEST), "r") as f:
                manifest = json.loads(f.read())
            replicas = manifest["replicas"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"manifest unreadable: {exc}") from None
        for replica, entry in replicas.items():
            path = posixpath.join(where, entry["file"])
            try:
                with self.fs.open(path, "rb") as f:
                    blob = f.read()
            except OSError as exc:
                raise ValueError(f"snapshot of {replica} unreadable: {exc}") from None
            if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
                raise ValueError(f"snapshot of {replica} fails its checksum")
        return Checkpoint(epoch, where, manifest)

    def latest(self) -> Checkpoint | None:
        """The newest committed checkpoint that checks out (None: none does)."""
        for epoch in reversed(self.epochs()):
            if not self._committed(epoch):
                continue
            try:
                return self.open(epoch)
            except ValueError as exc:
                logger.warning(
                    "checkpoint %s of job %s is corrupt (%s); using the previous one",
                    epoch,
                    self.job_id,
                    exc,
                )
        return None

    def load(self, checkpoint: Checkpoint, replica: str) -> Any:
        """The snapshot ``replica`` wrote into ``checkpoint``."""
        entry = checkpoint.replicas[replica]
        with self.fs.open(posixpath.join(checkpoint.path, entry["file"]), "rb") as f:
            return pickle.loads(f.read())
