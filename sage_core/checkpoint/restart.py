"""Restart strategies: how often, and after how long, a failed job restarts from
its last committed checkpoint.

Written as strings (DSL, YAML, CLI): ``"none"``, ``"fixed(N, DELAY_S)"`` (at most N
restarts, DELAY_S seconds apart) or ``"exponential(INITIAL_S, MAX_S, ATTEMPTS)"``
(delays doubling from INITIAL_S up to MAX_S, at most ATTEMPTS restarts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sage_core.common.errors import SageError

_FORM = re.compile(r"^\s*(none|fixed|exponential)\s*(?:\((.*)\))?\s*$")


class RestartStrategyError(SageError, ValueError):
    """A restart strategy string is malformed."""


@dataclass(frozen=True, slots=True)
class RestartStrategy:
    """Parsed restart strategy (see the module docstring)."""

    kind: str = "none"
    attempts: int = 0
    delay_s: float = 0.0
    max_delay_s: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> RestartStrategy:
        """The strategy ``text`` describes.

        Raises:
            RestartStrategyError: the text is not one of the three forms.
        """
        if text is None:
            return cls()
        m = _FORM.match(str(text))
        usage = (
            f"restart {text!r}: expected 'none', 'fixed(N, DELAY_S)' or "
            f"'exponential(INITIAL_S, MAX_S, ATTEMPTS)'"
        )
        if not m:
            raise RestartStrategyError(usage)
        kind, args = m.group(1), m.group(2)
        try:
            nums = [float(a) for a in args.split(",")] if args else []
        except ValueError:
            raise RestartStrategyError(usage) from None
        if kind == "none" and not nums:
            return cls()
        if kind == "fixed" and len(nums) == 2 and nums[0] >= 0 and nums[1] >= 0:
            return cls("fixed", int(nums[0]), nums[1], nums[1])
        if kind == "exponential" and len(nums) == 3 and min(nums) >= 0:
            return cls("exponential", int(nums[2]), nums[0], max(nums[0], nums[1]))
        raise RestartStrategyError(usage)

    def delay(self, attempt: int) -> float | None:
        """Seconds before restart number ``attempt`` (1-based); None: give up."""
        if attempt > self.attempts:
            return None
        if self.kind == "exponential":
            return min(self.max_delay_s, self.delay_s * 2 ** (attempt - 1))
        return self.delay_s
