"""Engine emulator: OpenAI-compatible engines whose timing comes from a profile.

A test and benchmark tool — no model runs; every latency it produces is emulated
from a profile (``profile.py``, data in ``profiles/``). ``sage engine emulate CONFIG``
serves several emulated engines from one process, placed on emulated devices whose
timelines they share (``device.py``); ``sage engine fit-profile URL`` measures a live
engine and writes a profile.
"""

from __future__ import annotations

import click

from sage_core import hookimpl


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


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``emulate`` and ``fit-profile`` to ``sage engine``."""
    group = cli.commands.get("engine")
    if not isinstance(group, click.Group):
        group = click.Group("engine", help="Inference engines.")
        cli.add_command(group)
    group.add_command(emulate_cmd)
    try:
        from sage_plugins.emulator.fit import fit_cmd
    except ImportError:  # pragma: no cover - fit is optional
        return
    group.add_command(fit_cmd)
