"""Being polite to a site: adaptive request pacing, Retry-After, and a circuit breaker.

Every site (host) gets a :class:`SiteGuard` holding

* an :class:`AdaptivePacer` that spaces the *start* of every HTTP request to that host by
  ``interval`` seconds (all worker threads share it). The interval grows by ``grow`` each
  time the site pushes back (429/503) and shrinks by ``shrink`` on each success, never
  below ``min_interval``. A Retry-After header holds *every* request to the host until
  that time, not just the one that was refused;
* a pybreaker ``CircuitBreaker`` that opens after ``fail_max`` consecutive site failures
  (pushback, 5xx, resets, timeouts), makes the whole pool wait ``reset_timeout`` seconds,
  then lets exactly one probe through (half-open) and closes when it succeeds.

We use ``breaker.calling()`` rather than ``breaker.call(fn)``: ``call`` holds the
breaker's lock for the whole call, which would serialise every download on one thread.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pybreaker

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_STALE = "_cadenza_stale_failure"


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C) while waiting; the item stays pending."""


@dataclass(frozen=True)
class PacingConfig:
    """Delays in seconds. Defaults suit a real site; tests shrink them."""

    min_interval: float = 2.0  # between request starts to one host, when all is well
    pushback_step: float = 5.0  # the smallest interval after a 429/503
    max_interval: float = 120.0
    grow: float = 2.0  # interval *= grow on pushback
    shrink: float = 0.9  # interval *= shrink on success (slow recovery)
    max_retry_after: float = 900.0  # a longer Retry-After is capped (and logged)
    fail_max: int = 5  # consecutive site failures that open the breaker
    reset_timeout: float = 60.0  # how long an open breaker waits before its probe
    poll: float = 0.05  # how often a waiting worker re-checks the stop flag


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


class AdaptivePacer:
    """Spaces request starts to one host; thread-safe.

    ``sleep(seconds)`` must return early (and may raise :class:`Stopped`) when the run
    stops; the acquirer passes an ``Event.wait``-based one.
    """

    def __init__(self, config: PacingConfig, *, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.interval = config.min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_start = float("-inf")
        self._hold_until = float("-inf")
        #: (clock time, seconds waited) for every wait, for the progress line and tests.
        self.waits: list[tuple[float, float]] = []
        self.pushbacks = 0

    def acquire(self, sleep: Callable[[float], None]) -> float:
        """Block until this host may be sent another request; return seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                start = max(self._hold_until, self._last_start + self.interval)
                if start <= now:
                    self._last_start = now
                    if waited > 0:
                        self.waits.append((now, waited))
                    return waited
                delay = start - now
            # Sleep in short steps so a new Retry-After or a stop request is seen quickly.
            step = min(delay, max(self.config.poll, 0.001))
            sleep(step)
            waited += step

    def push_back(self, retry_after: float | None) -> None:
        """The host said 429/503: slow down, and hold all requests for Retry-After."""
        cfg = self.config
        with self._lock:
            self.pushbacks += 1
            self.interval = min(cfg.max_interval, max(self.interval * cfg.grow, cfg.pushback_step))
            if retry_after is not None:
                if retry_after > cfg.max_retry_after:
                    log.warning("Retry-After %.0f s capped at %.0f s", retry_after, cfg.max_retry_after)
                    retry_after = cfg.max_retry_after
                self._hold_until = max(self._hold_until, self._clock() + retry_after)

    def succeeded(self) -> None:
        """A request went well: recover slowly towards ``min_interval``."""
        with self._lock:
            self.interval = max(self.config.min_interval, self.interval * self.config.shrink)


class _TransitionLog(pybreaker.CircuitBreakerListener):
    def __init__(self, guard: SiteGuard) -> None:
        self._guard = guard

    def state_change(self, cb, old_state, new_state) -> None:  # type: ignore[no-untyped-def]
        old = old_state.name if old_state is not None else None
        if new_state.name == pybreaker.STATE_OPEN:
            self._guard.trips += 1
        self._guard.transitions.append((old, new_state.name))
        log.warning("circuit for %s: %s -> %s", self._guard.host, old, new_state.name)


@dataclass
class SiteGuard:
    """Pacer + circuit breaker for one host."""

    host: str
    config: PacingConfig
    is_site_failure: Callable[[BaseException], bool]
    clock: Clock = time.monotonic
    pacer: AdaptivePacer = field(init=False)
    breaker: pybreaker.CircuitBreaker = field(init=False)
    #: (old state, new state) for every breaker transition, in order.
    transitions: list[tuple[str | None, str]] = field(default_factory=list)
    #: how many times the breaker has opened; an attempt that started before the latest
    #: opening and fails afterwards is *stale*: that outage has been counted already.
    trips: int = 0

    def __post_init__(self) -> None:
        self.pacer = AdaptivePacer(self.config, clock=self.clock)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=self.config.fail_max,
            reset_timeout=self.config.reset_timeout,
            # Only the site's own trouble counts; a 404 or a non-audio file says nothing about it.
            exclude=[lambda exc: not self.is_site_failure(exc) or getattr(exc, _STALE, False)],
            listeners=[_TransitionLog(self)],
            # Keep the real exception: its reason goes into the manifest.
            throw_new_error_on_trip=False,
            name=self.host,
        )
        self._probe = threading.Lock()

    @property
    def state(self) -> str:
        return str(self.breaker.current_state)

    def _open_remaining(self) -> float:
        opened = self.breaker._state_storage.opened_at
        if opened is None:
            return 0.0
        elapsed = (datetime.now(UTC) - opened).total_seconds()
        return max(0.0, self.breaker.reset_timeout - elapsed)

    @contextlib.contextmanager
    def attempt(self, sleep: Callable[[float], None]) -> Iterator[None]:
        """Run one download attempt under the breaker.

        While the breaker is open every worker waits here (the pool pauses); once the
        timeout has passed exactly one worker goes through as the probe while the others
        keep waiting; its success closes the breaker, its failure re-opens it.
        """
        poll = max(self.config.poll, 0.001)
        while True:
            state = self.state
            if state == pybreaker.STATE_CLOSED:
                trips = self.trips
                with self.breaker.calling():
                    try:
                        yield
                    except BaseException as exc:
                        if self.trips != trips:
                            # Without this, failures still in flight when the breaker opened
                            # re-open it (open -> open) and restart its timeout each time.
                            with contextlib.suppress(AttributeError):
                                setattr(exc, _STALE, True)
                        raise
                return
            remaining = self._open_remaining() if state == pybreaker.STATE_OPEN else 0.0
            if remaining > 0:
                sleep(min(remaining, poll))
                continue
            if not self._probe.acquire(blocking=False):
                sleep(poll)
                continue
            try:
                if self.state == pybreaker.STATE_CLOSED:
                    continue  # another probe closed it meanwhile; go round as a normal call
                # In OPEN with the timeout elapsed, pybreaker moves to HALF_OPEN on this call.
                with self.breaker.calling():
                    yield
                return
            finally:
                self._probe.release()


class SiteGuards:
    """One :class:`SiteGuard` per host, created on first use; thread-safe."""

    def __init__(
        self,
        config: PacingConfig,
        is_site_failure: Callable[[BaseException], bool],
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self._is_site_failure = is_site_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._guards: dict[str, SiteGuard] = {}

    def __call__(self, host: str) -> SiteGuard:
        with self._lock:
            guard = self._guards.get(host)
            if guard is None:
                guard = SiteGuard(host, self.config, self._is_site_failure, clock=self._clock)
                self._guards[host] = guard
            return guard

    def all(self) -> list[SiteGuard]:
        with self._lock:
            return list(self._guards.values())


def stoppable_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that wakes on ``stop`` and raises :class:`Stopped`."""

    def sleep(seconds: float) -> None:
        if stop.wait(max(0.0, seconds)):
            raise Stopped("stopping")

    return sleep
