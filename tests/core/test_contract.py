"""Operator contracts: validation, overrides and the plain-data round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.contract import Contract, ContractError


def test_gpu_contract_requires_gpu_resource() -> None:
    contract = Contract(gpu=1, resources={"TPU": 2})
    assert contract.required_resources() == {"GPU": 1.0, "TPU": 2.0}
    assert Contract().required_resources() == {}


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ContractError) as info:
        Contract(cpu=-1, batch_size=0, state="sometimes")  # type: ignore[arg-type]
    message = str(info.value)
    assert "cpu" in message and "batch_size" in message and "state" in message


def test_wrong_types_are_named() -> None:
    with pytest.raises(ContractError, match="gpu: must be a number"):
        Contract(gpu="one")  # type: ignore[arg-type]


def test_unknown_override_field_lists_known_fields() -> None:
    with pytest.raises(ContractError, match=r"unknown contract field.*gpus"):
        Contract().merged({"gpus": 1})


def test_override_keeps_other_fields() -> None:
    base = Contract(batch_size=32, max_wait_ms=5)
    merged = base.merged({"gpu": 1})
    assert (merged.gpu, merged.batch_size, merged.max_wait_ms) == (1, 32, 5)


@given(
    cpu=st.floats(0, 64),
    gpu=st.integers(0, 8),
    batch=st.integers(1, 4096),
    wait=st.floats(0, 1000),
    state=st.sampled_from(["stateless", "stateful"]),
    cap=st.none() | st.integers(1, 10_000),
    res=st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 100), max_size=3),
)
def test_plain_data_round_trip(
    cpu: float,
    gpu: int,
    batch: int,
    wait: float,
    state: str,
    cap: int | None,
    res: dict[str, float],
) -> None:
    contract = Contract(
        cpu=cpu,
        gpu=gpu,
        batch_size=batch,
        max_wait_ms=wait,
        state=state,  # type: ignore[arg-type]
        queue_capacity=cap,
        resources=res,
    )
    assert Contract.from_dict(contract.to_dict()) == contract
