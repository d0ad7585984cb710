"""``sage plan`` and ``sage run`` on YAML specs (CliRunner, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sage_core.cli import cli

SPEC = """
name: cli
operators:
  - {name: nums, use: range, config: {stop: 20}, parallelism: 2}
  - {name: half, use: "tests.core.test_cli_pipeline:half", role: map, inputs: [nums]}
  - {name: out, use: collect, inputs: [{from: half, router: least-queue}]}
"""


def half(x: int) -> float:
    return x / 2


def _spec(tmp_path: Path, text: str = SPEC) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_plan_prints_tasks_json_and_dot(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    runner = CliRunner()
    text = runner.invoke(cli, ["plan", spec])
    assert text.exit_code == 0, text.output
    assert "task nums" in text.output and "least-queue" in text.output
    as_json = runner.invoke(cli, ["plan", spec, "--json"])
    plan = json.loads(as_json.output)
    assert {r["id"] for r in plan["replicas"]} >= {"nums#0", "nums#1"}
    dot = runner.invoke(cli, ["plan", spec, "--dot", "--no-chaining"])
    assert (
        dot.output.startswith('digraph "cli"') and '"half#0" -> "out#0"' in dot.output
    )


def test_run_prints_collected_items_and_writes_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "m.json"
    traces = tmp_path / "t.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            _spec(tmp_path),
            "--metrics-out",
            str(metrics),
            "--trace-out",
            str(traces),
        ],
    )
    assert result.exit_code == 0, result.output
    values = sorted(json.loads(line) for line in result.stdout.splitlines())
    assert values == [x / 2 for x in range(20)]
    summary = json.loads(metrics.read_text())
    assert summary["status"] == "succeeded"
    assert summary["operators"]["half"]["items_in"] == 20
    assert traces.read_text().strip()


def test_bad_spec_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    spec = _spec(tmp_path, SPEC.replace("use: collect", "use: colect"))
    result = CliRunner().invoke(cli, ["run", spec])
    assert result.exit_code == 1
    assert "Did you mean 'collect'" in result.output
    assert "Traceback" not in result.output


def test_operator_failure_exits_with_its_message(tmp_path: Path) -> None:
    spec = _spec(tmp_path, SPEC.replace("stop: 20", "stop: 20, step: 0"))
    result = CliRunner().invoke(cli, ["run", spec])
    assert result.exit_code == 1
    assert "range step must not be 0" in result.output


def test_plan_dot_labels_break_lines_instead_of_printing_backslash_n(
    tmp_path: Path,
) -> None:
    dot = CliRunner().invoke(cli, ["plan", _spec(tmp_path), "--dot", "--no-chaining"])
    assert dot.exit_code == 0, dot.output
    assert '[label="half#0\\nlocal q=' in dot.output  # DOT's line break: \n
    assert "\\\\n" not in dot.output  # not an escaped backslash followed by n


WORDS_SPEC = """
name: words
operators:
  - {name: read, use: text-lines, config: {path: words.txt}}
  - {name: out, use: collect, inputs: [read]}
"""


def test_run_reads_input_next_to_the_spec_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_dir = tmp_path / "pipeline"
    pipeline_dir.mkdir()
    (pipeline_dir / "words.txt").write_text("alpha\nbeta\n")
    (pipeline_dir / "p.yaml").write_text(WORDS_SPEC)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(cli, ["run", "../pipeline/p.yaml"])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(line) for line in result.stdout.splitlines()) == [
        "alpha",
        "beta",
    ]


def test_missing_input_file_is_named_without_the_dead_letter_hint(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, WORDS_SPEC)
    result = CliRunner().invoke(cli, ["run", spec])
    assert result.exit_code == 1
    assert f"input file {tmp_path / 'words.txt'} does not exist" in result.output
    assert "dead-letter" not in result.output
    assert "Traceback" not in result.output


def test_shipped_example_spec_runs_from_outside_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).parents[2] / "examples" / "pipelines" / "words.yaml"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(example)])
    assert result.exit_code == 0, result.output
    assert "SAGE" in result.stdout.split()
