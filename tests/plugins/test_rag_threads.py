"""index-writer and retrieve run their index on the CPUs their contract declares
(with the DSL's ``contract=`` overrides), not on every CPU of the worker (replicas
sharing a worker would oversubscribe it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sage_core import LocalEnvironment
from sage_core.contract import Contract
from sage_core.functions import OperatorContext
from sage_core.vector_index import read_index_header
from sage_plugins.rag.retrieval import IndexWriter, Retrieve


def _items(n: int = 12) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"id": f"d{i}", "text": f"doc {i}", "embedding": rng.standard_normal(8)}
        for i in range(n)
    ]


def _write(writer: IndexWriter) -> Path:
    writer.open(OperatorContext("index-writer", job_id="j"))
    writer.sink_batch(_items())
    writer.close()
    (shard,) = (Path(writer.config["root"]) / "c").glob("shard-*/index.bin")
    return shard


class TwoCpuWriter(IndexWriter):
    """An index-writer whose contract declares two CPUs."""

    contract = Contract(cpu=2, batch_size=256)


def _threads_of_pipeline(root: Path, writer: Any, **options: Any) -> int:
    env = LocalEnvironment("threads")
    env.from_collection(_items()).sink(
        writer, collection="c", root=str(root), **options
    )
    env.execute(timeout=60)
    (shard,) = (root / "c").glob("shard-*/index.bin")
    return int(read_index_header(shard)["options"]["threads"])


def test_index_writer_builds_on_its_contract_cpus(tmp_path: Path) -> None:
    assert _threads_of_pipeline(tmp_path / "one", "index-writer") == 1
    assert _threads_of_pipeline(tmp_path / "two", TwoCpuWriter) == 2
    # a DSL override reaches the operator as well as the placement
    got = _threads_of_pipeline(tmp_path / "dsl", "index-writer", contract={"cpu": 2})
    assert got == 2


def test_index_options_threads_still_win(tmp_path: Path) -> None:
    writer = IndexWriter(
        collection="c",
        root=str(tmp_path),
        index="native-ivf",
        index_options={"threads": 3, "nlist": 2},
    )
    assert read_index_header(_write(writer))["options"]["threads"] == 3


def test_retrieve_searches_on_its_contract_cpus(tmp_path: Path) -> None:
    _write(
        IndexWriter(collection="c", root=str(tmp_path), index_options={"threads": 0})
    )
    op = Retrieve(collection="c", root=str(tmp_path), top_k=3)
    op.open(OperatorContext("retrieve"))
    assert op.store is not None
    assert [s.index.threads for s in op.store.shards] == [1]  # type: ignore[attr-defined]
    (out,) = op.map_batch([{"embedding": np.ones(8, np.float32)}])
    assert len(out["contexts"]) == 3
