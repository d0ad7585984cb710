"""``sage scheduler`` and ``sage worker``: ordinary Dask processes that load SAGE.

Option names are Dask's (``dask scheduler`` / ``dask worker``) so existing deployment
scripts carry over. Each process preloads ``sage_core.runtime.preload`` so SAGE plugins
load there; the scheduler also mounts SAGE's dashboard routes. They listen where Dask's
do (every interface by default) and warn when that is beyond loopback without TLS
(``--tls-*``, see :mod:`sage_core.cli.tls`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import click

from sage_core.cli.tls import check_scheme, security_from, tls_options, warn_if_exposed
from sage_core.common.settings import DEFAULT_DASHBOARD_ADDRESS, DEFAULT_SCHEDULER_PORT

logger = logging.getLogger(__name__)

PRELOAD = "sage_core.runtime.preload"
ROUTES_MODULE = "sage_core.observe.routes"


def parse_resources(text: str | None) -> dict[str, float]:
    """Parse Dask's resource syntax: ``"GPU=1 MEM=10e9"`` or ``"GPU=1,MEM=10e9"``.

    Raises:
        click.BadParameter: an entry is not ``NAME=NUMBER`` or a number is negative.
    """
    resources: dict[str, float] = {}
    for part in (text or "").replace(",", " ").split():
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{part!r} is not NAME=NUMBER (e.g. --resources 'GPU=1 MEM=8e9')",
                param_hint="--resources",
            )
        try:
            amount = float(value)
        except ValueError:
            raise click.BadParameter(
                f"{name}={value!r}: the amount must be a number",
                param_hint="--resources",
            ) from None
        if amount < 0:
            raise click.BadParameter(
                f"{name}={value}: amounts cannot be negative", param_hint="--resources"
            )
        resources[name] = amount
    return resources


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    )


def _profile_config(profile: bool) -> dict[str, Any]:
    # Dask's statistical profiler costs CPU on every worker even when idle.
    return {"distributed.worker.profile.enabled": profile}


async def _serve_until_signal(servers: list[Any]) -> None:
    """Start Dask servers and run them until they finish or SIGINT/SIGTERM arrives.

    The signal handlers are installed before the servers start, so a signal during
    start-up (a nanny spawning its worker) also closes them cleanly.
    """
    from distributed._signals import wait_for_signals

    signal_task = asyncio.create_task(wait_for_signals())
    await asyncio.sleep(0)  # let the task install its handlers

    async def serve() -> None:
        await asyncio.gather(*servers)  # awaiting a server starts it
        await asyncio.gather(*(server.finished() for server in servers))

    serve_task = asyncio.create_task(serve())
    done, _ = await asyncio.wait(
        {serve_task, signal_task}, return_when=asyncio.FIRST_COMPLETED
    )
    if signal_task in done:
        signum = signal_task.result()
        logger.info("received signal %s, closing", signum)
        serve_task.cancel()
        await asyncio.gather(
            *(server.close(reason=f"signal-{signum}") for server in servers),
            return_exceptions=True,
        )
        await asyncio.gather(serve_task, return_exceptions=True)
    else:
        signal_task.cancel()
        serve_task.result()


@click.command("scheduler")
@click.option("--host", default="", help="URI, IP or hostname of this server.")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_SCHEDULER_PORT,
    show_default=True,
    help="Serving port (0 picks a free one).",
)
@click.option(
    "--dashboard-address",
    default=DEFAULT_DASHBOARD_ADDRESS,
    show_default=True,
    help="Address on which to listen for the dashboard (with SAGE's /sage pages).",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=True,
    show_default=True,
    help="Launch the dashboard.",
)
@click.option(
    "--scheduler-file",
    default=None,
    help="File to write connection information to, read by workers and clients.",
)
@click.option(
    "--preload",
    multiple=True,
    help="Module to preload in the scheduler as well as SAGE's (repeatable).",
)
@click.option(
    "--idle-timeout",
    default=None,
    help="Time of inactivity after which to stop the scheduler (e.g. '1h').",
)
@tls_options
def scheduler(
    host: str,
    port: int,
    dashboard_address: str,
    dashboard: bool,
    scheduler_file: str | None,
    preload: tuple[str, ...],
    idle_timeout: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Start a Dask scheduler that loads SAGE plugins and serves the /sage pages.

    Anyone who reaches its port can run code on the cluster: on a shared network
    give --tls-ca-file, --tls-cert and --tls-key (workers and clients need them too).
    """
    import dask
    from dask.utils import parse_timedelta
    from distributed import Scheduler
    from distributed.compatibility import asyncio_run
    from distributed.config import get_loop_factory

    security = security_from("scheduler", tls_ca_file, tls_cert, tls_key)
    check_scheme(host, security)
    _logging()
    warn_if_exposed("scheduler", host, security)
    routes = list(dask.config.get("distributed.scheduler.http.routes"))
    if ROUTES_MODULE not in routes:
        routes.append(ROUTES_MODULE)

    async def run() -> None:
        server = Scheduler(
            host=host or None,
            port=port,
            dashboard=dashboard,
            dashboard_address=dashboard_address,
            scheduler_file=scheduler_file,
            preload=[PRELOAD, *preload],
            idle_timeout=parse_timedelta(idle_timeout) if idle_timeout else None,
            security=security,
        )
        await _serve_until_signal([server])

    with dask.config.set({"distributed.scheduler.http.routes": routes}):
        asyncio_run(run(), loop_factory=get_loop_factory())


FIRST_TRY_S = 1.0


async def _wait_for_scheduler(
    address: str,
    timeout: float,
    connection_args: dict[str, Any],
    on_wait: Callable[[], None],
) -> None:
    """Connect to the scheduler once (proof it is there), within ``timeout``.

    ``on_wait`` is called when a first short try fails, before waiting for the rest.
    """
    from distributed.comm import connect

    first = min(FIRST_TRY_S, timeout)
    try:
        comm = await connect(address, timeout=first, **connection_args)
    except (OSError, asyncio.TimeoutError):
        if timeout <= first:
            raise
        on_wait()
        comm = await connect(address, timeout=timeout - first, **connection_args)
    await comm.close()


def _scheduler_address(address: str | None, scheduler_file: str | None) -> str:
    if address and scheduler_file:
        raise click.UsageError("give either ADDRESS or --scheduler-file, not both")
    if address:
        return address if "://" in address else f"tcp://{address}"
    if not scheduler_file:
        raise click.UsageError("give the scheduler ADDRESS or --scheduler-file")
    import json
    from pathlib import Path

    path = Path(scheduler_file)
    try:
        return str(json.loads(path.read_text())["address"])
    except FileNotFoundError:
        raise click.ClickException(
            f"scheduler file {path} does not exist; start `sage scheduler "
            f"--scheduler-file {path}` first"
        ) from None
    except (ValueError, KeyError) as exc:
        raise click.ClickException(
            f"scheduler file {path} is not a Dask scheduler file: {exc}"
        ) from None


@click.command("worker")
@click.argument("address", required=False)
@click.option("--scheduler-file", default=None, help="Read the scheduler address here.")
@click.option(
    "--nthreads", type=int, default=1, show_default=True, help="Threads per worker."
)
@click.option(
    "--nworkers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to start (each under its own nanny).",
)
@click.option(
    "--resources",
    default=None,
    help="Resources this worker offers for task/actor constraints, e.g. 'GPU=1 MEM=8e9'.",
)
@click.option("--name", default=None, help="Worker name (suffixed -N with --nworkers).")
@click.option("--host", default=None, help="Serving host of the worker.")
@click.option(
    "--dashboard-address",
    default=":0",
    show_default=True,
    help="Address of the worker's own dashboard.",
)
@click.option(
    "--memory-limit",
    default="auto",
    show_default=True,
    help="Bytes of memory per worker process ('auto', '4GiB', or 0 for no limit).",
)
@click.option(
    "--nanny/--no-nanny",
    default=True,
    show_default=True,
    help="Start workers in a nanny process that restarts them.",
)
@click.option(
    "--death-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the scheduler before giving up with an error.",
)
@click.option(
    "--profile/--no-profile",
    default=False,
    show_default=True,
    help="Dask's statistical profiler (costs CPU on every worker, even idle).",
)
@click.option(
    "--local-directory", default=None, help="Directory for the workers' scratch files."
)
@click.option("--preload", multiple=True, help="Extra module to preload (repeatable).")
@tls_options
def worker(
    address: str | None,
    scheduler_file: str | None,
    nthreads: int,
    nworkers: int,
    resources: str | None,
    name: str | None,
    host: str | None,
    dashboard_address: str,
    memory_limit: str,
    nanny: bool,
    death_timeout: float,
    profile: bool,
    local_directory: str | None,
    preload: tuple[str, ...],
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Start Dask worker(s) connected to ADDRESS that load SAGE plugins.

    Tag GPU nodes with --resources GPU=N: SAGE places operators whose contract asks for
    a GPU only on such workers.
    """
    import dask
    from distributed import Nanny, Worker
    from distributed.compatibility import asyncio_run
    from distributed.config import get_loop_factory

    if nthreads < 1:
        raise click.BadParameter("must be at least 1", param_hint="--nthreads")
    if nworkers > 1 and not nanny:
        raise click.UsageError("--no-nanny cannot start more than one worker")
    offered = parse_resources(resources)
    target = _scheduler_address(address, scheduler_file)
    security = security_from("worker", tls_ca_file, tls_cert, tls_key)
    check_scheme(host, security)
    if target.startswith("tls://") and security is None:
        raise click.UsageError(
            f"the scheduler at {target} speaks TLS: give --tls-ca-file, --tls-cert "
            f"and --tls-key"
        )
    _logging()
    warn_if_exposed("worker", host, security)

    def waiting() -> None:
        click.echo(
            f"waiting up to {death_timeout:g} s (--death-timeout) for the scheduler "
            f"at {target} ...",
            err=True,
        )

    connection_args = security.get_connection_args("worker") if security else {}
    try:
        asyncio_run(
            _wait_for_scheduler(target, death_timeout, connection_args, waiting),
            loop_factory=get_loop_factory(),
        )
    except (OSError, asyncio.TimeoutError) as exc:
        raise click.ClickException(
            f"no scheduler reachable at {target} within {death_timeout:g}s ({exc}). "
            f"Start one with `sage scheduler`, or check the address, the port and "
            f"the TLS options."
        ) from None

    server_class: Any = Nanny if nanny else Worker

    async def run() -> None:
        servers = []
        for i in range(nworkers):
            worker_name = name if nworkers == 1 or name is None else f"{name}-{i}"
            servers.append(
                server_class(
                    target,
                    nthreads=nthreads,
                    resources=offered or None,
                    name=worker_name,
                    host=host,
                    dashboard_address=dashboard_address,
                    memory_limit=memory_limit,
                    death_timeout=death_timeout,
                    local_directory=local_directory,
                    preload=[PRELOAD, *preload],
                    security=security,
                )
            )
        await _serve_until_signal(servers)

    with dask.config.set(_profile_config(profile)):
        asyncio_run(run(), loop_factory=get_loop_factory())
