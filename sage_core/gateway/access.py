"""Who may call the gateway, and which engine URLs the admin API may register.

Inference routes (``/v1/*``) take the keys of ``api_keys``; admin routes (``/admin/*``)
take only the keys of ``admin_keys`` (``SAGE_ADMIN_KEY`` for ``sage gateway``), so an
inference key never opens them. A gateway with neither list is open (meant for
loopback); one with inference keys but no admin key keeps its admin routes closed.
Keys are compared in constant time.

``POST /admin/engines`` accepts an engine URL only when its host is allowed:
loopback, the hosts of the configured engines, and ``allowed_engine_hosts`` (names,
addresses, CIDR networks, or ``"*"`` for any host), so the gateway cannot be turned
into a proxy to arbitrary hosts.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from sage_core.common.net import is_loopback_host
from sage_core.llm.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
)

ANY_HOST = "*"


class PermissionDeniedError(GatewayError):
    """The caller is known but may not do this (403)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class KeyRing:
    """A set of bearer tokens, checked without timing differences between keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        given = key.encode()
        found = False
        for known in self._keys:  # no early exit: every key costs the same
            found |= hmac.compare_digest(given, known)
        return found


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


class Access:
    """Checks the keys of inference and admin requests.

    Args:
        api_keys: keys of the inference routes (none: open).
        admin_keys: keys of the admin routes (none: open only when ``api_keys`` is
            empty too, closed otherwise).
    """

    def __init__(self, api_keys: Iterable[str], admin_keys: Iterable[str]) -> None:
        self.api_keys = KeyRing(api_keys)
        self.admin_keys = KeyRing(admin_keys)

    def inference(self, headers: Mapping[str, str]) -> str | None:
        """Check an inference request; returns its key (rate limits are per key).

        Raises:
            AuthenticationError: keys are configured and this one is missing or wrong.
        """
        key = bearer(headers)
        if self.api_keys and key not in self.api_keys:
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <key>'"
                if key is None
                else "the API key is not valid for this gateway"
            )
        return key

    def admin(self, headers: Mapping[str, str]) -> None:
        """Check an admin request.

        Raises:
            AuthenticationError: the admin key is missing or wrong.
            PermissionDeniedError: an inference key was sent, or the gateway has
                inference keys but no admin key (admin routes are closed).
        """
        if not self.admin_keys:
            if self.api_keys:
                raise PermissionDeniedError(
                    "the admin routes are closed: this gateway has API keys but no "
                    "admin key; set admin_keys in its config or SAGE_ADMIN_KEY"
                )
            return
        key = bearer(headers)
        if key in self.admin_keys:
            return
        if key is None:
            raise AuthenticationError(
                "missing admin key: send 'Authorization: Bearer <admin key>'"
            )
        if key in self.api_keys:
            raise PermissionDeniedError(
                "an inference API key does not open /admin; send an admin key "
                "(admin_keys / SAGE_ADMIN_KEY)"
            )
        raise AuthenticationError("the admin key is not valid for this gateway")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class EngineHosts:
    """The hosts ``POST /admin/engines`` may point the gateway at.

    Args:
        configured_urls: URLs of the engines in the gateway config (their hosts are
            allowed).
        allowed: more hosts: names, IP addresses, CIDR networks, or ``"*"``.

    Raises:
        ValueError: an entry of ``allowed`` looks like a network but is not one.
    """

    def __init__(self, configured_urls: Iterable[str], allowed: Iterable[str]) -> None:
        self.any = False
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed:
            entry = entry.strip().lower()
            if entry == ANY_HOST:
                self.any = True
            elif "/" in entry:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self.names.add(entry.strip("[]"))
        for url in configured_urls:
            host = urlsplit(url).hostname
            if host:
                self.names.add(host)

    def allows(self, host: str) -> bool:
        """Whether an engine on ``host`` may be registered."""
        host = host.lower()
        if self.any or is_loopback_host(host) or host in self.names:
            return True
        address = _address(host)
        if address is None:
            return False
        return any(address == _address(name) for name in self.names) or any(
            address in network for network in self.networks
        )

    def check(self, url: str) -> None:
        """Refuse an engine URL whose host is not allowed.

        Raises:
            InvalidRequestError: the URL does not parse (e.g. a bad IPv6 literal).
            PermissionDeniedError: the host is not loopback, not a configured engine's
                host and not in ``allowed_engine_hosts``.
        """
        try:
            host = urlsplit(url).hostname or ""
        except ValueError as exc:
            raise InvalidRequestError(
                f"engine url {url!r} is not a valid URL: {exc}", param="url"
            ) from exc
        if not self.allows(host):
            raise PermissionDeniedError(
                f"engine host {host!r} is not allowed: the gateway registers engines "
                f"on loopback, on the hosts of its configured engines, and on "
                f"allowed_engine_hosts in its config (add {host!r} there)",
                param="url",
                code="engine_host_not_allowed",
            )
