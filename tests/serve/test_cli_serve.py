"""``sage serve SPEC`` as a real process: the words example answers over HTTP and
stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import httpx

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"


def test_sage_serve_answers_and_stops(processes, sage_cmd, free_port, wait_for):
    port = free_port()
    proc = processes.start(
        [*sage_cmd, "serve", str(EXAMPLES / "words.yaml"), "--port", str(port)],
        "serve",
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, processes.log(proc)
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 60, "sage serve")
    r = httpx.post(f"{url}/v1/pipelines/words", json="to be or not")
    assert r.json() == ["TO", "BE", "OR", "NOT"]  # split (flat_map) then upper
    assert processes.stop(proc) == 0, processes.log(proc)  # drained, clean exit


def test_sage_serve_refuses_a_pipeline_with_two_sources(sage_cli, tmp_path):
    from click.testing import CliRunner

    spec = tmp_path / "two.yaml"
    spec.write_text(
        "name: two\noperators:\n"
        "  - {name: a, use: range, config: {n: 3}}\n"
        "  - {name: b, use: range, config: {n: 3}}\n"
        "  - {name: out, use: print, inputs: [a, b]}\n"
    )
    result = CliRunner().invoke(sage_cli, ["serve", str(spec)])
    assert result.exit_code != 0 and "one source" in result.output
