"""TLS for ``sage scheduler``, ``sage worker`` and ``sage run``, with Dask's option names.

SAGE's transport and plans are pickles, like Dask's own messages: whoever reaches a
scheduler or worker port can run code there. ``--tls-ca-file``, ``--tls-cert`` and
``--tls-key`` (all three, PEM files) turn on mutual TLS: every process presents a
certificate signed by the CA and accepts only peers that do. Without them a process
that listens beyond loopback prints a one-line warning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sage_core.common.net import is_loopback_host

if TYPE_CHECKING:
    from distributed.security import Security

F = TypeVar("F", bound=Callable[..., Any])

_PEM = click.Path(exists=True, dir_okay=False)


def tls_options(command: F) -> F:
    """Add ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` to a click command."""
    options = [
        click.option(
            "--tls-ca-file",
            type=_PEM,
            default=None,
            help="CA certificate(s) for TLS (PEM); peers must be signed by it.",
        ),
        click.option(
            "--tls-cert",
            type=_PEM,
            default=None,
            help="This process's TLS certificate (PEM).",
        ),
        click.option(
            "--tls-key",
            type=_PEM,
            default=None,
            help="The private key of --tls-cert (PEM).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def security_from(
    role: str, tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None
) -> Security | None:
    """Dask's ``Security`` for ``role`` (``scheduler``, ``worker`` or ``client``)
    from the three options, or None when none is given (Dask's config then applies).

    Raises:
        click.UsageError: only some of the three options are given.
    """
    given = {
        "--tls-ca-file": tls_ca_file,
        "--tls-cert": tls_cert,
        "--tls-key": tls_key,
    }
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise click.UsageError(
            f"TLS needs --tls-ca-file, --tls-cert and --tls-key together; missing "
            f"{', '.join(missing)}"
        )
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=tls_ca_file,
        **{f"tls_{role}_cert": tls_cert, f"tls_{role}_key": tls_key},
    )


def listens_with_tls(host: str | None, security: Security | None) -> bool:
    """Whether a Dask server given ``host`` and ``security`` will listen over TLS."""
    scheme = host.split("://", 1)[0] if host and "://" in host else None
    if scheme is not None:
        return scheme == "tls"
    if security is None:
        from distributed.security import Security

        security = Security()  # Dask's config (distributed.comm.tls.*)
    return bool(security.require_encryption)


def exposure_warning(what: str, host: str | None, security: Security | None) -> str:
    """The one-line warning for a server listening beyond loopback without TLS,
    or ``""`` when it listens on loopback only or over TLS."""
    if is_loopback_host(host) or listens_with_tls(host, security):
        return ""
    return (
        f"warning: the {what} listens on {host or 'every interface'} without TLS; "
        f"anyone who reaches its port can run code here (Dask and SAGE send "
        f"pickles). Use --tls-ca-file/--tls-cert/--tls-key, or --host 127.0.0.1 on "
        f"a single machine."
    )


def warn_if_exposed(what: str, host: str | None, security: Security | None) -> None:
    """Print :func:`exposure_warning` to stderr when it applies."""
    message = exposure_warning(what, host, security)
    if message:
        click.echo(message, err=True)


def check_scheme(host: str | None, security: Security | None) -> None:
    """Refuse TLS options with a host that names another protocol (``tcp://``).

    Raises:
        click.UsageError: TLS options were given with a non-``tls://`` host.
    """
    if security is not None and host and "://" in host and host[:6] != "tls://":
        raise click.UsageError(
            f"--host {host} names a protocol other than tls:// but TLS options "
            f"were given; drop the scheme or use tls://"
        )
