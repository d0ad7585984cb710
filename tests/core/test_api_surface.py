"""What ``sage_core`` and ``sage_core.api`` export, and the DSL's signatures."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import sage_core
from sage_core import api
from sage_core.api.dask_environment import DaskEnvironment
from sage_core.api.datastream import ConnectedStreams, DataStream

NODE_OPTIONS = ("name", "parallelism", "contract", "on_error")


def test_dask_environment_is_importable_from_sage_core_and_api() -> None:
    from sage_core import DaskEnvironment as from_top
    from sage_core.api import DaskEnvironment as from_api

    assert from_top is DaskEnvironment
    assert from_api is DaskEnvironment


def test_every_dsl_name_is_exported_from_sage_core() -> None:
    assert set(api.__all__) <= set(sage_core.__all__)
    for name in api.__all__:
        assert getattr(sage_core, name) is getattr(api, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = sage_core.no_such_name


def test_plain_import_stays_light_until_the_dsl_is_used(tmp_path: Path) -> None:
    code = (
        "import sys, sage_core\n"
        "assert 'distributed' not in sys.modules and 'sage_core.api' not in sys.modules\n"
        "from sage_core import LocalEnvironment\n"
        "assert 'distributed' not in sys.modules, 'LocalEnvironment pulled in dask'\n"
        "from sage_core import DaskEnvironment\n"
        "assert 'distributed' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # not the source tree, which would shadow the installed package
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "method",
    [
        DataStream.map,
        DataStream.filter,
        DataStream.flat_map,
        DataStream.sink,
        DataStream.join,
        ConnectedStreams.co_map,
    ],
)
def test_node_options_are_keyword_only_parameters(method: object) -> None:
    params = inspect.signature(method).parameters  # type: ignore[arg-type]
    for option in NODE_OPTIONS:
        assert params[option].kind is inspect.Parameter.KEYWORD_ONLY
    assert next(reversed(params.values())).kind is inspect.Parameter.VAR_KEYWORD


def test_node_options_never_reach_the_operator_config() -> None:
    env = sage_core.LocalEnvironment("sig")
    out = (
        env.from_collection([1])
        .map(
            "builtins:abs",
            name="m",
            parallelism=2,
            contract={"batch_size": 4},
            on_error="dead-letter",
            scale=3,
        )
        .collect()
    )
    node = env.graph.nodes["m"]
    assert node.config == {"scale": 3}
    assert (node.parallelism, node.on_error) == (2, "dead-letter")
    assert node.contract == {"batch_size": 4}
    assert out.name in env.graph.nodes


def test_the_module_docs_name_the_node_options() -> None:
    import sage_core.api.datastream as module

    for option in NODE_OPTIONS:
        assert f"``{option}``" in (module.__doc__ or "")
