"""Engine emulator: OpenAI-compatible engines whose timing comes from a profile.

A test and benchmark tool — no model runs; every latency it produces is emulated
from a profile (``profile.py``, data in ``profiles/``). ``sage engine emulate CONFIG``
serves several emulated engines from one process, placed on emulated devices whose
timelines they share (``device.py``); ``sage engine fit-profile`` measures live engines
and writes a profile (``fit.py``). Both commands join ``sage engine`` through the
``engines`` plugin.
"""

from __future__ import annotations

import click


@click.command("emulate")
@click.argument("config", type=click.Path(dir_okay=False))
def emulate_cmd(config: str) -> None:
    """EMULATED engines from CONFIG (YAML/JSON: profile, devices, engines).

    Serves each engine on its own port until Ctrl-C; prints one JSON line with
    every engine's URL once all listen. Latencies follow the profile: no model
    runs. See sage_plugins/emulator/emulate.py for the config format.
    """
    from sage_plugins.emulator.emulate import run
    from sage_plugins.emulator.profile import EmulatorConfigError

    try:
        run(config)
    except EmulatorConfigError as exc:
        raise click.ClickException(str(exc)) from None
