"""The circuit-breaker policy, over ``pybreaker``'s state storages and listener protocol.

What is pybreaker's: the per-key **state storage** (``CircuitMemoryStorage``, and its Redis
storage for shared state), holding the state, the consecutive-failure and success counters
and the opening time; and the **listener protocol** (``pybreaker.CircuitBreakerListener``),
whose ``state_change(cb, old_state, new_state)`` receives pybreaker's own objects.

What is ours: the transitions. pybreaker's ``call()`` holds one lock for the whole call (every
call through a breaker is serialised), has no asyncio support, counts cancellation as a
failure, and lets every caller through when half-open, where a late success can even close a
breaker that a failed probe just re-opened. Here:

- closed: calls pass; a failure adds to the consecutive count, a success resets it; the
  failure that brings the count to ``fail_max`` opens the circuit (that call still gets its
  own outcome);
- open: calls fail fast with :class:`CircuitOpenError` until ``reset_timeout`` has passed;
- half-open: exactly one probe at a time is let through (threads and tasks alike); others
  fail fast with ``retry_after=0``; the probe's success closes the circuit (after
  ``success_threshold`` of them), its failure re-opens it;
- outcomes of calls admitted before a transition are ignored once the state has moved on
  (each permit carries the circuit's generation; with a shared store, transitions made by
  other processes are not counted, so there it holds within each process);
- cancellation and resilience's own errors are neutral: they change nothing.

Locks are held only around these bookkeeping steps, never across the call.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pybreaker

from ._clock import SYSTEM_CLOCK, Clock
from ._exceptions import CircuitOpenError, ResilienceError
from ._forksafe import after_fork_in_child
from ._keys import KeyFunc
from ._log import EventLogger
from ._repr import policy_repr
from ._validate import check_instance, check_number, check_statuses

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = [
    "FAILURE_STATUSES",
    "BreakerStorage",
    "CircuitBreaker",
    "MemoryBreakerStorage",
    "Outcome",
    "Permit",
    "Ticket",
]

FAILURE_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})
"""Statuses that count as failures by default: the server is failing, not the request."""

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
_STATE_CLASSES: dict[str, Any] = {
    CLOSED: pybreaker.CircuitClosedState,
    OPEN: pybreaker.CircuitOpenState,
    HALF_OPEN: pybreaker.CircuitHalfOpenState,
}
_events = EventLogger("resilience.breaker")

OpenError = Callable[[str, float, str], BaseException]
"""Builds the error for a refused call: (message, retry_after, key) -> exception."""


def _open_error(message: str, retry_after: float, key: str) -> BaseException:
    return CircuitOpenError(message, retry_after=retry_after, key=key)


class Outcome(enum.Enum):
    """What one call through the breaker counts as."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


class Permit(enum.Enum):
    """How a call was let through: as a normal call, or as the half-open probe."""

    NORMAL = "normal"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What :meth:`CircuitBreaker.admit` hands out and :meth:`CircuitBreaker.record` takes back.

    ``generation`` counts the circuit's transitions in this process: an outcome reported with
    a ticket from an earlier generation is stale news and is ignored.
    """

    permit: Permit
    generation: int
    circuit: _Circuit | None = field(default=None, compare=False, repr=False)
    """The circuit that admitted the call, so :meth:`CircuitBreaker.record` needs no lookup."""


class _Circuit:
    """One key's breaker: pybreaker's storage, a pybreaker shell for listeners, a probe flag."""

    __slots__ = ("generation", "key", "lock", "normal", "probing", "shell", "storage")

    def __init__(self, key: str, storage: Any) -> None:
        self.key = key
        self.storage = storage
        self.lock = threading.Lock()
        self.probing = False
        self.generation = 0
        self.normal = Ticket(Permit.NORMAL, 0, self)  # reused: the closed path allocates nothing
        # The object listeners receive as `cb`: pybreaker's own class over the same storage,
        # so cb.name, cb.fail_counter and cb.current_state read the real state. Never called.
        self.shell = pybreaker.CircuitBreaker(state_storage=storage, name=key)


class BreakerStorage:
    """Where breaker state lives: one pybreaker state storage per key.

    Subclasses say how a key's storage is made (:meth:`make`). At most ``max_keys`` keys are
    kept in this process; the least recently used is forgotten first (a forgotten key starts
    closed again, unless its state lives in a shared store).
    """

    def __init__(self, *, max_keys: int = 10_000) -> None:
        check_number(type(self).__name__, "max_keys", max_keys, minimum=1, integer=True)
        self.max_keys = max_keys
        self._circuits: OrderedDict[str, _Circuit] = OrderedDict()
        self._lock = threading.Lock()
        after_fork_in_child(self, BreakerStorage._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for circuit in self._circuits.values():
            circuit.lock = threading.Lock()
            circuit.probing = False

    def make(self, key: str) -> Any:
        """A new pybreaker state storage for ``key``, starting closed."""
        raise NotImplementedError

    def circuit(self, key: str) -> _Circuit:
        """The breaker of ``key`` (made on first use)."""
        lock = self._lock
        lock.acquire()  # not ``with``: this runs on every call, and ``with`` costs twice as much
        try:
            circuit = self._circuits.get(key)
            if circuit is not None:
                self._circuits.move_to_end(key)
            else:
                circuit = self._circuits[key] = _Circuit(key, self.make(key))
                if len(self._circuits) > self.max_keys:
                    self._circuits.popitem(last=False)
            return circuit
        finally:
            lock.release()

    def state(self, key: str) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` for ``key``."""
        return str(self.circuit(key).storage.state)


class MemoryBreakerStorage(BreakerStorage):
    """Breaker state in this process (pybreaker's ``CircuitMemoryStorage``), shared by every
    transport and decorator built from the policies that hold it, sync and async."""

    def make(self, key: str) -> Any:
        return pybreaker.CircuitMemoryStorage(CLOSED)

    def __repr__(self) -> str:
        return f"MemoryBreakerStorage(max_keys={self.max_keys})"


class _EventListener(pybreaker.CircuitBreakerListener):
    """Emits breaker.opened / breaker.half_open / breaker.closed through structlog."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name = new_state.name.replace("-", "_")
        _events.info(
            f"breaker.{'opened' if name == OPEN else name}",
            key=cb.name,
            previous=None if old_state is None else old_state.name,
            failures=cb.fail_counter,
        )


_EVENTS = _EventListener()


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    """Fail fast while a dependency is failing, then probe it. Immutable; change with ``replace``.

    Used as the policy of a :class:`CircuitBreakerTransport` and as a decorator on sync and
    async functions.

    Args:
        fail_max: consecutive failures that open the circuit (>= 1).
        reset_timeout: seconds the circuit stays open before one probe is let through.
        success_threshold: successful probes needed to close it again.
        key: which calls share a breaker: a function of the request for transports (default:
            per host), a string for decorators (default: the function's module and qualified
            name).
        failure_statuses: response statuses that count as failures; 429 and other 4xx never do.
        is_failure: overrides the classification: called with the response or the exception
            (transports) or the return value or the exception (decorators); return True
            (failure), False (success) or None (the default rule decides).
        storage: where the state lives (:class:`MemoryBreakerStorage` by default); every
            policy holding the same object shares it, and ``replace()`` keeps it.
        listeners: ``pybreaker.CircuitBreakerListener`` objects told of every state change.
        clock: where time is read.
    """

    __repr__ = policy_repr

    fail_max: int = 5
    reset_timeout: float = 30.0
    success_threshold: int = 1
    key: KeyFunc | str | None = None
    failure_statuses: Set[int] = FAILURE_STATUSES
    is_failure: Callable[[Any], bool | None] | None = None
    storage: BreakerStorage = field(default_factory=MemoryBreakerStorage, compare=False)
    listeners: tuple[Any, ...] = ()
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_number("CircuitBreaker", "fail_max", self.fail_max, minimum=1, integer=True)
        check_number("CircuitBreaker", "reset_timeout", self.reset_timeout, minimum=0)
        check_number(
            "CircuitBreaker", "success_threshold", self.success_threshold, minimum=1, integer=True
        )
        key: object = self.key
        if key is not None and not (isinstance(key, str) or callable(key)):
            raise TypeError(f"CircuitBreaker.key must be a string or a function, got {key!r}")
        object.__setattr__(
            self,
            "failure_statuses",
            check_statuses("CircuitBreaker", "failure_statuses", self.failure_statuses),
        )
        predicate: object = self.is_failure
        if predicate is not None and not callable(predicate):
            raise TypeError(f"CircuitBreaker.is_failure must be callable, got {predicate!r}")
        check_instance("CircuitBreaker", "storage", self.storage, BreakerStorage)
        listeners: object = self.listeners
        if not isinstance(listeners, (tuple, list)):
            raise TypeError(f"CircuitBreaker.listeners must be a sequence, got {listeners!r}")
        for listener in listeners:
            if not isinstance(listener, pybreaker.CircuitBreakerListener):
                raise TypeError(
                    "CircuitBreaker.listeners must hold pybreaker.CircuitBreakerListener "
                    f"objects, got {listener!r}"
                )
        object.__setattr__(self, "listeners", tuple(listeners))
        check_instance("CircuitBreaker", "clock", self.clock, Clock)

    def replace(self, **changes: Any) -> CircuitBreaker:
        """A copy with ``changes`` applied (and validated); the storage is kept."""
        return dataclasses.replace(self, **changes)

    def state(self, key: str) -> str:
        """The state of ``key``'s breaker: ``"closed"``, ``"open"`` or ``"half-open"``."""
        return self.storage.state(key)

    # -- the state machine -----------------------------------------------------------------------

    def _move(self, circuit: _Circuit, new: str, now: float) -> None:
        """Change ``circuit`` to ``new`` (caller holds its lock) and tell the listeners."""
        storage = circuit.storage
        old = storage.state
        if new == OPEN:
            storage.opened_at = datetime.fromtimestamp(now, timezone.utc)
            storage.reset_success_counter()
        elif new == HALF_OPEN:
            storage.reset_success_counter()
        else:
            storage.reset_counter()
            storage.reset_success_counter()
        storage.state = new
        circuit.generation += 1
        circuit.normal = Ticket(Permit.NORMAL, circuit.generation, circuit)
        shell = circuit.shell
        shell.fail_max = self.fail_max
        shell.reset_timeout = self.reset_timeout
        before = _STATE_CLASSES[old](shell, None, notify=False) if old in _STATE_CLASSES else None
        after = _STATE_CLASSES[new](shell, None, notify=False)
        for listener in (_EVENTS, *self.listeners):
            try:
                listener.state_change(shell, before, after)
            except Exception as exc:  # a broken listener must not break the call
                _events.info("breaker.listener_failed", key=circuit.key, error=repr(exc))

    def admit(self, key: str, error: OpenError | None = None) -> Ticket:
        """Let a call through, or raise :class:`CircuitOpenError` without touching anything.

        Args:
            key: the breaker's key.
            error: builds the error to raise, from (message, retry_after, key); the httpx
                adapter passes one that also derives from ``httpx.TransportError``.

        Raises:
            CircuitOpenError: the circuit is open, or half-open with a probe already in flight.
        """
        circuit = self.storage.circuit(key)
        storage = circuit.storage
        if storage.state == CLOSED:
            return circuit.normal
        with circuit.lock:
            state = storage.state
            if state == CLOSED:
                return circuit.normal
            now = self.clock.time()
            if state == OPEN:
                opened = storage.opened_at
                wait = 0.0 if opened is None else opened.timestamp() + self.reset_timeout - now
                if wait > 0:
                    raise (error or _open_error)(
                        f"circuit {key!r} is open; next probe in {wait:.3g}s", wait, key
                    )
                self._move(circuit, HALF_OPEN, now)
            if circuit.probing:
                raise (error or _open_error)(
                    f"circuit {key!r} is half-open and its probe is in flight", 0.0, key
                )
            circuit.probing = True
            return Ticket(Permit.PROBE, circuit.generation, circuit)

    def record(self, key: str, ticket: Ticket, outcome: Outcome) -> None:
        """Count the outcome of a call that :meth:`admit` let through with ``ticket``."""
        circuit = ticket.circuit
        if circuit is None:
            circuit = self.storage.circuit(key)
        storage = circuit.storage
        if ticket is circuit.normal and outcome is Outcome.SUCCESS:
            if storage.counter:  # the common case (closed, no failures) costs no write
                with circuit.lock:
                    if ticket is circuit.normal:
                        storage.reset_counter()
            return
        with circuit.lock:
            probe = ticket.permit is Permit.PROBE
            if probe:
                circuit.probing = False
            if outcome is Outcome.NEUTRAL or ticket.generation != circuit.generation:
                return  # neutral, or admitted before the last transition: stale news
            state = storage.state
            if probe and state == HALF_OPEN:
                if outcome is Outcome.FAILURE:
                    self._move(circuit, OPEN, self.clock.time())
                else:
                    storage.increment_success_counter()
                    if storage.success_counter >= self.success_threshold:
                        self._move(circuit, CLOSED, self.clock.time())
            elif not probe and state == CLOSED:
                if outcome is Outcome.FAILURE:
                    storage.increment_counter()
                    if storage.counter >= self.fail_max:
                        self._move(circuit, OPEN, self.clock.time())
                else:
                    storage.reset_counter()

    # -- decorator -------------------------------------------------------------------------------

    def classify_result(self, result: object) -> Outcome:
        """Decorators: a return value is a success unless ``is_failure`` says otherwise."""
        verdict = None if self.is_failure is None else self.is_failure(result)
        return Outcome.FAILURE if verdict else Outcome.SUCCESS

    def classify_error(self, exc: BaseException) -> Outcome:
        """Decorators: an exception is a failure; ours and cancellation are neutral."""
        if isinstance(exc, ResilienceError) or not isinstance(exc, Exception):
            return Outcome.NEUTRAL
        verdict = None if self.is_failure is None else self.is_failure(exc)
        if verdict is None:
            return Outcome.FAILURE
        return Outcome.FAILURE if verdict else Outcome.SUCCESS

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function: fail fast while its circuit is open."""
        name = getattr(function, "__qualname__", None) or type(function).__qualname__
        if self.key is None:
            key = f"{getattr(function, '__module__', '?')}.{name}"
        elif isinstance(self.key, str):
            key = self.key
        else:
            raise TypeError(
                f"CircuitBreaker.key must be a string to decorate {name}, got {self.key!r}"
            )
        breaker = self

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                ticket = breaker.admit(key)
                outcome = Outcome.NEUTRAL
                try:
                    result = await function(*args, **kwargs)
                    outcome = breaker.classify_result(result)
                    return result
                except BaseException as exc:
                    outcome = breaker.classify_error(exc)
                    raise
                finally:
                    breaker.record(key, ticket, outcome)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ticket = breaker.admit(key)
            outcome = Outcome.NEUTRAL
            try:
                result = function(*args, **kwargs)
                outcome = breaker.classify_result(result)
                return result
            except BaseException as exc:
                outcome = breaker.classify_error(exc)
                raise
            finally:
                breaker.record(key, ticket, outcome)

        return cast("Callable[P, R]", wrapper)
