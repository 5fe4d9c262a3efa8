"""Login throttling: after a few failed sign-ins for one user name, or many from one client
address, further attempts are refused for a delay that doubles with each further failure.

In memory, per process: the point is to make guessing passwords slow, not to be exact
across a cluster. While locked, attempts are refused before the password is checked, so
the right password does not get through either (nor does checking it cost scrypt time).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelhost.errors import RateLimited


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        per_user: int = 5,
        per_client: int = 20,
        base_delay_s: float = 30.0,
        max_delay_s: float = 900.0,
        forget_after_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"user": per_user, "client": per_client}
        self.base, self.max, self.forget_after = base_delay_s, max_delay_s, forget_after_s
        self._clock = clock
        self._failures: dict[tuple[str, str], _Failures] = {}
        self._lock = threading.Lock()

    def check(self, user: str, client: str) -> None:
        """RateLimited (429, Retry-After) while the user name or the address is locked."""
        now = self._clock()
        with self._lock:
            for key in (("user", user), ("client", client)):
                f = self._failures.get(key)
                if f is not None and f.locked_until > now:
                    wait = math.ceil(f.locked_until - now)
                    raise RateLimited(
                        f"too many failed sign-ins for this {key[0]}; try again in {wait} s", retry_after=wait
                    )

    def failed(self, user: str, client: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of names: keep memory bounded
                self._failures.clear()
            for key in (("user", user), ("client", client)):
                f = self._failures.setdefault(key, _Failures())
                if now - f.last > self.forget_after:
                    f.count = 0
                f.count, f.last = f.count + 1, now
                over = f.count - self.limits[key[0]]
                if over >= 0:
                    f.locked_until = now + min(self.max, self.base * 2**over)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(("user", user), None)
