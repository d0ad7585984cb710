"""Managed keyed state: per-key values an operator reads and writes through its
context (``context.keyed_state``, a dict keyed by the routing key), snapshotted by
key group.

A key belongs to group ``stable_hash(key) % KEY_GROUPS``. Snapshots are
``{group: {key: value}}``; a restore hands each replica the keys its input channel
routes to it, so a job can resume at another parallelism (keys move with their
groups).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from sage_core.channels import stable_hash

#: fixed number of key groups (the most replicas keyed state can be spread over)
KEY_GROUPS = 128


def key_group(key: Any) -> int:
    """The key group of ``key``."""
    return stable_hash(key) % KEY_GROUPS


def snapshot_groups(values: Mapping[Any, Any]) -> dict[int, dict[Any, Any]]:
    """``values`` grouped by key group (the caller serialises it at once)."""
    groups: dict[int, dict[Any, Any]] = {}
    for key, value in values.items():
        groups.setdefault(key_group(key), {})[key] = value
    return groups


def restore_groups(
    target: MutableMapping[Any, Any],
    groups: Mapping[int, Mapping[Any, Any]],
    owns: Callable[[Any], bool] | None = None,
) -> None:
    """Load into ``target`` the keys of ``groups`` that ``owns`` accepts (all when
    None)."""
    for keys in groups.values():
        for key, value in keys.items():
            if owns is None or owns(key):
                target[key] = value
