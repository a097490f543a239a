"""The retry policy: what to retry, how long to wait, when to give up. Pure decisions.

Nothing here reads a clock, sleeps or does I/O: callers pass ``now`` and get back a
:class:`Decision` (retry after so many seconds, or stop and why). The httpx transport and the
function decorator both drive the same :class:`RetryCall`, so they cannot disagree.

Outcomes are classified as API.md section 10.2 says:

==============================================  =========================================
outcome                                         retried
==============================================  =========================================
429 (the server did not process it)             any method, honouring Retry-After
408 and 5xx in ``statuses``                     idempotent method or idempotency key
connect error, connect/pool timeout (not sent)  any method
read/write error, read timeout, protocol error  idempotent method or idempotency key
``x-should-retry: true`` / ``false``            any method / never
our own errors (deadline, open circuit...)      never
==============================================  =========================================
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random as _random
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._clock import SYSTEM_CLOCK, Clock
from ._forksafe import after_fork_in_child
from ._keys import KeyFunc
from ._repr import policy_repr
from ._retry_after import parse_retry_after, parse_should_retry
from ._validate import check_instance, check_methods, check_number, check_statuses

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = [
    "IDEMPOTENT",
    "RETRY_STATUSES",
    "Backoff",
    "Decision",
    "Failure",
    "MemoryBudgetStorage",
    "Retry",
    "RetryBudget",
    "RetryCall",
    "Verdict",
]

IDEMPOTENT: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods RFC 9110 defines as idempotent: a resend cannot change the outcome."""

RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses retried by default: timeouts, throttling and transient server errors."""

Jitter = Literal["full", "equal", "decorrelated", "none"]
_JITTERS = ("full", "equal", "decorrelated", "none")
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter.

    The un-jittered delay before retry ``n`` (1 for the first retry) is
    ``min(cap, base * multiplier ** (n - 1))``; call it ``d``. Then by ``jitter``:

    - ``"full"``: uniform in ``[0, d]`` (spreads a herd of clients best; AWS's recommendation).
    - ``"equal"``: uniform in ``[d / 2, d]`` (never retries immediately).
    - ``"decorrelated"``: uniform in ``[base, 3 * previous]``, capped at ``cap`` (AWS's
      "decorrelated jitter"; ``multiplier`` is not used).
    - ``"none"``: exactly ``d``.

    Every delay lies within ``[0, cap]``.

    Args:
        base: the first delay, seconds (>= 0).
        multiplier: growth factor per retry (>= 1).
        cap: the largest delay, seconds (>= base).
        jitter: one of ``"full"``, ``"equal"``, ``"decorrelated"``, ``"none"``.
    """

    base: float = 0.5
    multiplier: float = 2.0
    cap: float = 30.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        check_number("Backoff", "base", self.base, minimum=0)
        check_number("Backoff", "multiplier", self.multiplier, minimum=1)
        check_number("Backoff", "cap", self.cap, minimum=0)
        if self.cap < self.base:
            raise ValueError(
                f"Backoff.cap must be >= Backoff.base ({self.base!r}), got {self.cap!r}"
            )
        jitter: object = self.jitter
        if jitter not in _JITTERS:
            raise ValueError(f"Backoff.jitter must be one of {_JITTERS}, got {self.jitter!r}")

    def exponential(self, retry: int) -> float:
        """The un-jittered delay before retry number ``retry`` (1-based), capped, overflow-safe."""
        if self.base == 0:
            return 0.0
        exponent = max(retry - 1, 0)
        try:
            delay = self.base * self.multiplier**exponent
        except OverflowError:  # multiplier ** exponent is beyond floats: compare in log space
            log_delay = math.log(self.base) + exponent * math.log(self.multiplier)
            return self.cap if log_delay >= math.log(self.cap) else math.exp(log_delay)
        return min(delay, self.cap)

    def delay(
        self,
        retry: int,
        previous: float | None = None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        Args:
            retry: which retry this is, 1-based.
            previous: the delay chosen before the previous retry (decorrelated jitter only).
            random: a source of uniform floats in ``[0, 1)``; injectable for tests.
        """
        jitter = self.jitter
        if jitter == "decorrelated":
            high = max(self.base, (self.base if previous is None else previous) * 3)
            return min(self.cap, self.base + (high - self.base) * random())
        delay = self.exponential(retry)
        if jitter == "full":
            return delay * random()
        if jitter == "equal":
            return delay / 2 + delay / 2 * random()
        return delay

    def replace(self, **changes: Any) -> Backoff:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


class MemoryBudgetStorage:
    """In-process, thread-safe counts of requests and retries per key, over a sliding window.

    Counts live in one-second buckets, so the window slides in one-second steps. At most
    ``max_keys`` keys are kept; the least recently used is dropped first.
    """

    __slots__ = ("__weakref__", "_keys", "_lock", "max_keys", "window")

    def __init__(self, *, window: int = 10, max_keys: int = 10_000) -> None:
        check_number("MemoryBudgetStorage", "window", window, minimum=1, integer=True)
        check_number("MemoryBudgetStorage", "max_keys", max_keys, minimum=1, integer=True)
        self.window = window
        self.max_keys = max_keys
        # key -> [stamps, requests, retries], each a list with one slot per second of the window
        self._keys: OrderedDict[str, tuple[list[int], list[int], list[int]]] = OrderedDict()
        self._lock = threading.Lock()
        after_fork_in_child(self, MemoryBudgetStorage._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()

    def _counts(self, key: str, second: int) -> tuple[list[int], list[int], list[int]]:
        counts = self._keys.get(key)
        if counts is None:
            size = self.window
            counts = self._keys[key] = ([second] * size, [0] * size, [0] * size)
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        slot = second % self.window
        stamps, requests, retries = counts
        if stamps[slot] != second:
            stamps[slot] = second
            requests[slot] = retries[slot] = 0
        return counts

    def totals(self, key: str, now: float) -> tuple[int, int]:
        """Requests and retries recorded for ``key`` in the window ending at ``now``."""
        oldest = int(now) - self.window
        with self._lock:
            counts = self._keys.get(key)
            if counts is None:
                return 0, 0
            stamps, requests, retries = counts
            live = [i for i, stamp in enumerate(stamps) if stamp > oldest]
            return sum(requests[i] for i in live), sum(retries[i] for i in live)

    def deposit(self, key: str, now: float) -> None:
        """Record one request for ``key``."""
        second = int(now)
        slot = second % self.window
        lock = self._lock
        lock.acquire()  # not ``with``: this runs on every request, and ``with`` costs twice as much
        try:
            counts = self._keys.get(key)
            if counts is not None and counts[0][slot] == second:  # the common case, inline
                self._keys.move_to_end(key)
                counts[1][slot] += 1
                return
            _, requests, _ = self._counts(key, second)
            requests[slot] += 1
        finally:
            lock.release()

    def withdraw(self, key: str, now: float, ratio: float, min_per_second: float) -> bool:
        """Record one retry for ``key`` if the budget allows it; return whether it did."""
        second = int(now)
        with self._lock:
            stamps, requests, retries = self._counts(key, second)
            oldest = second - self.window
            sent = spent = 0
            for i, stamp in enumerate(stamps):
                if stamp > oldest:
                    sent += requests[i]
                    spent += retries[i]
            if spent + 1 > min_per_second * self.window + ratio * sent:
                return False
            retries[second % self.window] += 1
            return True


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Caps retries at a share of traffic, so retries cannot multiply an outage.

    Over a sliding window (10 s by default) and per key, a retry is allowed while
    ``retries + 1 <= min_per_second * window + ratio * requests``, where ``requests`` counts
    first attempts. When the budget is spent, the failure is returned as is.

    The counts live in ``storage``; every policy holding this budget shares them, and
    ``replace()`` keeps them.

    Args:
        ratio: retries allowed per request (0.2: at most 20% extra load).
        min_per_second: a floor, so quiet clients can still retry.
        storage: where the counts live (a fresh :class:`MemoryBudgetStorage` by default).
    """

    ratio: float = 0.2
    min_per_second: float = 10.0
    storage: MemoryBudgetStorage = field(
        default_factory=MemoryBudgetStorage, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        check_number("RetryBudget", "ratio", self.ratio, minimum=0)
        check_number("RetryBudget", "min_per_second", self.min_per_second, minimum=0)
        check_instance("RetryBudget", "storage", self.storage, MemoryBudgetStorage)

    def deposit(self, key: str, now: float) -> None:
        """Record a request for ``key`` at monotonic time ``now``."""
        self.storage.deposit(key, now)

    def withdraw(self, key: str, now: float) -> bool:
        """Take one retry for ``key`` if the budget allows it."""
        return self.storage.withdraw(key, now, self.ratio, self.min_per_second)

    def replace(self, **changes: Any) -> RetryBudget:
        """A copy with ``changes`` applied (and validated); the storage is kept."""
        return dataclasses.replace(self, **changes)


class Failure(enum.Enum):
    """How far a failed attempt got, which decides whether a resend is safe."""

    NOT_SENT = "not sent"
    """Connect error, connect or pool timeout: the server never saw the request."""
    MAYBE_SENT = "maybe sent"
    """Read/write error, read timeout, protocol error: the server may have processed it."""
    FATAL = "fatal"
    """Anything else, our own errors included: never retried."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy makes of one attempt's outcome, before attempts, deadline and budget."""

    retryable: bool
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do next: retry after ``delay`` seconds, or stop (``retry`` is False)."""

    retry: bool
    delay: float
    reason: str


ExceptionFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)


def _check_on(value: object) -> None:
    if value is None:
        return
    if isinstance(value, type):
        if not issubclass(value, BaseException):
            raise TypeError(f"Retry.on must be exception types or a predicate, got {value!r}")
        return
    if isinstance(value, tuple):
        for item in value:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"Retry.on must hold exception types, got {item!r}")
        if not value:
            raise ValueError("Retry.on must not be an empty tuple")
        return
    if not callable(value):
        raise TypeError(f"Retry.on must be exception types or a predicate, got {value!r}")


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how to retry a request or a function call. Immutable; change with ``replace``.

    Used three ways: as the policy of a :class:`RetryTransport`, as a per-request override
    (``extensions={"resilience": {"retry": policy}}``), and as a decorator
    (``@Retry(on=...)``) on sync and async functions.

    Args:
        attempts: total tries, the first one included (>= 1).
        backoff: how long to wait between tries.
        statuses: response statuses that may be retried.
        methods: methods that are safe to resend; others need an idempotency key header.
        respect_retry_after: honour ``Retry-After`` / ``retry-after-ms``: wait at least that long.
        max_retry_after: a longer server demand is not waited for: the response is returned.
        deadline: seconds for the whole logical request (all attempts and sleeps); None: none.
        budget: caps retries at a share of traffic per key; None: no cap.
        read_body: read the response body inside the attempt, so a broken body is retried too
            (only for a known length up to ``read_body_limit``, never ``text/event-stream``).
        read_body_limit: largest body ``read_body`` reads, bytes.
        idempotency_header: the request header that makes any method retryable.
        on: decorators only: the exception types to retry, or a predicate on the exception.
        key: which budget a call uses: a function of the request for transports (default:
            per host), a string for decorators (default: the function's module and qualified
            name).
        clock: where time is read and sleeps happen (tests pass a fake clock).
    """

    __repr__ = policy_repr

    attempts: int = 4
    backoff: Backoff = Backoff()
    statuses: Set[int] = RETRY_STATUSES
    methods: Set[str] = IDEMPOTENT
    respect_retry_after: bool = True
    max_retry_after: float = 120.0
    deadline: float | None = None
    budget: RetryBudget | None = None
    read_body: bool = False
    read_body_limit: int = 16 * _MIB
    idempotency_header: str = "Idempotency-Key"
    on: ExceptionFilter | None = None
    key: KeyFunc | str | None = None
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_number("Retry", "attempts", self.attempts, minimum=1, integer=True)
        check_instance("Retry", "backoff", self.backoff, Backoff)
        object.__setattr__(self, "statuses", check_statuses("Retry", "statuses", self.statuses))
        object.__setattr__(self, "methods", check_methods("Retry", "methods", self.methods))
        check_number("Retry", "max_retry_after", self.max_retry_after, minimum=0)
        check_number("Retry", "deadline", self.deadline, above=0, optional=True)
        check_instance("Retry", "budget", self.budget, (RetryBudget, type(None)))
        check_number("Retry", "read_body_limit", self.read_body_limit, minimum=0, integer=True)
        check_instance("Retry", "respect_retry_after", self.respect_retry_after, bool)
        check_instance("Retry", "read_body", self.read_body, bool)
        header: object = self.idempotency_header
        if not isinstance(header, str) or not header:
            raise ValueError(f"Retry.idempotency_header must be a header name, got {header!r}")
        _check_on(self.on)
        key: object = self.key
        if key is not None and not (isinstance(key, str) or callable(key)):
            raise TypeError(f"Retry.key must be a string or a function, got {key!r}")
        check_instance("Retry", "clock", self.clock, Clock)

    def replace(self, **changes: Any) -> Retry:
        """A copy with ``changes`` applied (and validated); the budget's state is kept."""
        return dataclasses.replace(self, **changes)

    # -- classification: pure functions of one outcome -------------------------------------

    def classify_response(
        self,
        method: str,
        status: int,
        headers: Mapping[str, str],
        *,
        keyed: bool,
        replayable: bool,
        now: float,
    ) -> Verdict:
        """Whether a response may be retried, and the delay the server asked for.

        Args:
            method: the request method.
            status: the response status.
            headers: the response headers (case-insensitive lookups).
            keyed: the request carries an idempotency key.
            replayable: the request body can be sent again.
            now: seconds since the epoch, to read an HTTP-date in ``Retry-After``.
        """
        hint = parse_should_retry(headers) if status >= 400 else None
        if hint is False:
            return Verdict(False, f"status {status}, x-should-retry: false")
        if hint is True:
            reason = f"status {status}, x-should-retry: true"
        elif status not in self.statuses:
            return Verdict(False, f"status {status}")
        elif status == 429 or method in self.methods or keyed:
            reason = f"status {status}"
        else:
            return Verdict(False, f"status {status} on {method} without an idempotency key")
        if not replayable:
            return Verdict(False, f"{reason}, but the request body cannot be replayed")
        retry_after = parse_retry_after(headers, now) if self.respect_retry_after else None
        return Verdict(True, reason, retry_after)

    def classify_failure(
        self, method: str, failure: Failure, description: str, *, keyed: bool, replayable: bool
    ) -> Verdict:
        """Whether an attempt that raised may be retried.

        Args:
            method: the request method.
            failure: how far the attempt got.
            description: names the error, for the reason.
            keyed: the request carries an idempotency key.
            replayable: the request body can be sent again.
        """
        if failure is Failure.FATAL:
            return Verdict(False, description)
        if failure is Failure.MAYBE_SENT:
            if not (method in self.methods or keyed):
                return Verdict(False, f"{description} on {method} without an idempotency key")
            if not replayable:
                return Verdict(False, f"{description}, but the request body cannot be replayed")
        return Verdict(True, description)

    def classify_exception(self, exc: BaseException) -> Verdict:
        """Decorators: whether an exception matches ``on``."""
        on = self.on
        if on is None:
            return Verdict(False, "no exception is retried without on=")
        matched = isinstance(exc, on) if isinstance(on, (type, tuple)) else bool(on(exc))
        return Verdict(matched, type(exc).__name__)

    # -- decorator ----------------------------------------------------------------------------

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function: retry it on the exceptions ``on`` names.

        Raises:
            TypeError: at decoration time, when ``on`` is not set.
        """
        from ._decorators import retry_function

        return retry_function(self, function)


class RetryCall:
    """The retry state of one logical request or call: attempts made, last delay, deadline.

    Not shared between calls and not thread-safe; one per logical request.

    Args:
        policy: the policy deciding.
        key: the budget key.
        deadline: absolute monotonic time by which everything must be over, or None.
        random: source of uniform floats in ``[0, 1)`` for jitter.
    """

    __slots__ = ("deadline", "key", "policy", "previous", "random", "retries")

    def __init__(
        self,
        policy: Retry,
        key: str,
        deadline: float | None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.policy = policy
        self.key = key
        self.deadline = deadline
        self.random = random
        self.retries = 0
        self.previous: float | None = None

    @property
    def attempts(self) -> int:
        """Attempts made so far (the one being decided on included)."""
        return self.retries + 1

    def decide(self, verdict: Verdict, now: float) -> Decision:
        """Retry or stop after an attempt, given the verdict on its outcome.

        Checked in order: the verdict, attempts left, ``max_retry_after``, the deadline (a
        sleep that would end past it is not started), then the budget (only consumed when
        everything else said yes).

        Args:
            verdict: the policy's verdict on the outcome.
            now: the monotonic time.
        """
        if not verdict.retryable:
            return Decision(False, 0.0, verdict.reason)
        policy = self.policy
        if self.retries + 1 >= policy.attempts:
            return Decision(False, 0.0, f"{verdict.reason}; attempts exhausted")
        backoff = policy.backoff.delay(self.retries + 1, self.previous, random=self.random)
        delay = backoff
        if verdict.retry_after is not None and policy.respect_retry_after:
            if verdict.retry_after > policy.max_retry_after:
                return Decision(
                    False,
                    0.0,
                    f"{verdict.reason}; Retry-After {verdict.retry_after:g}s exceeds "
                    f"max_retry_after {policy.max_retry_after:g}s",
                )
            delay = max(delay, verdict.retry_after)
        if self.deadline is not None and now + delay >= self.deadline:
            return Decision(False, 0.0, f"{verdict.reason}; the deadline would pass")
        budget = policy.budget
        if budget is not None and not budget.withdraw(self.key, now):
            return Decision(False, 0.0, f"{verdict.reason}; retry budget exhausted")
        self.retries += 1
        self.previous = backoff
        return Decision(True, delay, verdict.reason)
