"""``sage run --help`` says plainly that a pipeline spec is code."""

from __future__ import annotations

from click.testing import CliRunner

from sage_core.cli import cli


def test_run_help_says_a_spec_is_code() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "A spec is code, like a Python file" in text
    assert "Run only specs you trust." in text
