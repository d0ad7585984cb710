"""The RAG index-writer with checkpoints: a job restarted after a failure writes
every document exactly once."""

from __future__ import annotations

from pathlib import Path

from sage_core import LocalEnvironment
from sage_plugins.rag.collection import Collection


def _fault(item: dict, faults: str) -> dict:
    path = Path(faults) / item["id"]
    if path.exists():
        path.unlink()
        raise RuntimeError(f"injected fault on {item['id']}")
    return item


def test_a_restarted_indexing_job_writes_each_document_once(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "doc-1500").touch()
    docs = [
        {"id": f"doc-{i}", "text": f"note {i} about topic {i % 7}"} for i in range(2000)
    ]
    env = LocalEnvironment(
        "index",
        checkpoint_interval_s=0.01,
        checkpoint_dir=str(tmp_path / "ckpt"),
        restart="fixed(1, 0)",
    )
    stream = env.from_collection(docs).map(_fault, faults=str(faults))
    stream = stream.map("embed", backend="hash", backend_config={"dim": 32})
    stream.sink(
        "index-writer", collection="c", root=str(tmp_path / "rag"), mode="append"
    )
    result = env.execute(timeout=120)
    assert result.metrics["checkpoints"]["restarts"] == 1
    collection = Collection("c", str(tmp_path / "rag"))
    assert len(collection) == len(docs)
