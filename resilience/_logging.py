"""The logging policy: :class:`Log` (what is logged, where, at which level) and :class:`Redactions`.

Nothing here knows httpx: the transport in ``_transports/log.py`` takes the facts out of
requests and responses and hands them to the helpers below as plain strings, bytes and pairs.

Two rules hold everywhere:

- **Redaction before the logger.** URLs, headers, bodies and error messages are redacted
  here, before any logger (and so any processor of the application's) sees them.
- **A filtered level costs next to nothing.** :meth:`Log.sink` answers "would this level
  be emitted?" before a single field is computed: ``isEnabledFor`` for the library's own
  stdlib logger, ``is_enabled_for`` or structlog's no-op methods for a user's logger.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote_plus

import structlog

from . import _log
from ._log import REDACTED, SECRET_QUERY_PARAMS, EventLogger
from ._repr import policy_repr
from ._validate import check_instance, check_number

__all__ = [
    "DEFAULT_REDACTIONS",
    "SECRET_HEADERS",
    "SECRET_HEADER_PATTERNS",
    "Emit",
    "Log",
    "Redactions",
]

SECRET_HEADERS: frozenset[str] = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
        "x-auth-token", "x-amz-security-token", "x-csrf-token", "x-xsrf-token",
        "x-goog-api-key", "ocp-apim-subscription-key", "x-vault-token", "private-token",
        "x-access-token", "authentication",
    }
)  # fmt: skip
"""Headers whose values never reach a log (names compared in lower case)."""

SECRET_HEADER_PATTERNS: frozenset[str] = frozenset(
    {
        "token", "secret", "api-key", "apikey", "api_key", "password", "passwd", "signature",
        "session", "credential", "cookie",
    }
)  # fmt: skip
"""A header whose lower-cased name contains one of these is secret too (``X-Hub-Signature``)."""

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_LEVEL_NAMES: dict[int, str] = {number: name for name, number in _LEVELS.items()}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_BODY_LIMIT = 1024 * 1024
_MAX_REQUEST_ID = 128
_MAX_MESSAGE = 1000
_MAX_JSON = 1024 * 1024  # larger JSON bodies are not parsed to be redacted, so not shown
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")

_events = EventLogger("resilience.http")
_LIBRARY = logging.getLogger("resilience")
_MANAGER = logging.Logger.manager
# Log.quiet() remembers its answer while the loggers' state is unchanged; that state says it all
# only for loggers that decide as logging.Logger does (a custom logger class may not).
_STANDARD_LOGGERS = type(_events.stdlib) is logging.Logger and type(_LIBRARY) is logging.Logger

# structlog's filtering loggers (make_filtering_bound_logger) turn every method below their
# level into one shared no-op function; reading it off a public class finds it without
# importing structlog's private modules.
_NOP: object = structlog.make_filtering_bound_logger(logging.CRITICAL).debug
# structlog.get_logger() returns a lazy proxy that resolves the configuration on every call;
# its type is found the same way (building a proxy configures nothing).
_LAZY_PROXY: Any = type(structlog.get_logger())

Emit = Callable[..., Any]
"""``emit(event, **fields)``: a logger method for one level, or None when that level is off."""


def _names(owner: str, field_name: str, value: object, *, tokens: bool) -> frozenset[str]:
    """``value`` as a frozenset of lower-cased non-empty strings, or raise naming the culprit."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}.{field_name} must be a collection of strings, got {value!r}")
    names = set()
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{owner}.{field_name} holds {item!r}, not a non-empty string")
        if tokens and not _TOKEN.fullmatch(item):
            raise ValueError(f"{owner}.{field_name} holds {item!r}, not a header name")
        names.add(item.lower())
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class Redactions:
    """What never reaches a log: secret headers, secret query parameters, and the marker.

    A header is secret when its lower-cased name is in ``headers`` or contains one of
    ``header_patterns`` (``X-Hub-Signature-256`` holds ``signature``). A query parameter (or
    a fragment parameter, where OAuth puts tokens) is secret when its decoded, lower-cased
    name is in ``query_params``. The password of ``user:password@`` in a URL is always
    redacted, and a lone ``TOKEN@`` user part too. Immutable; extend with :meth:`extend` or
    ``|``, change with :meth:`replace`.

    Args:
        headers: secret header names (case-insensitive).
        query_params: secret query parameter names (case-insensitive).
        marker: what stands in place of a secret value.
        header_patterns: substrings that make any header name secret (case-insensitive).

    Example:
        >>> import resilience as rs
        >>> mine = rs.DEFAULT_REDACTIONS.extend(headers={"X-Tenant-Secret"}, query_params={"otp"})
        >>> mine.is_secret_header("x-tenant-secret"), "otp" in mine.query_params
        (True, True)
    """

    __repr__ = policy_repr

    headers: Set[str] = SECRET_HEADERS
    query_params: Set[str] = SECRET_QUERY_PARAMS
    marker: str = REDACTED
    header_patterns: Set[str] = SECRET_HEADER_PATTERNS

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "headers", _names("Redactions", "headers", self.headers, tokens=True)
        )
        object.__setattr__(
            self,
            "query_params",
            _names("Redactions", "query_params", self.query_params, tokens=False),
        )
        object.__setattr__(
            self,
            "header_patterns",
            _names("Redactions", "header_patterns", self.header_patterns, tokens=False),
        )
        marker: object = self.marker
        if not isinstance(marker, str):
            raise TypeError(f"Redactions.marker must be a string, got {marker!r}")
        if not marker or len(marker) > 100 or not marker.isprintable():
            raise ValueError(
                "Redactions.marker must be 1 to 100 printable characters, got " + repr(marker)
            )

    def replace(self, **changes: Any) -> Redactions:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def extend(
        self,
        *,
        headers: Iterable[str] = (),
        query_params: Iterable[str] = (),
        header_patterns: Iterable[str] = (),
    ) -> Redactions:
        """A copy that also redacts the names given (added to the current ones)."""
        return dataclasses.replace(
            self,
            headers=self.headers | _names("Redactions", "headers", headers, tokens=True),
            query_params=self.query_params
            | _names("Redactions", "query_params", query_params, tokens=False),
            header_patterns=self.header_patterns
            | _names("Redactions", "header_patterns", header_patterns, tokens=False),
        )

    def __or__(self, other: object) -> Redactions:
        """Both sets of names; the left side's marker."""
        if not isinstance(other, Redactions):
            return NotImplemented
        return self.extend(
            headers=other.headers,
            query_params=other.query_params,
            header_patterns=other.header_patterns,
        )

    def is_secret_header(self, name: str) -> bool:
        """Whether header ``name``'s value is redacted."""
        lowered = name.lower()
        if lowered in self.headers:
            return True
        return any(pattern in lowered for pattern in self.header_patterns)

    # -- redaction of plain values -------------------------------------------------------------

    def url(self, url: str) -> str:
        """``url`` with userinfo secrets and secret parameter values replaced by the marker.

        A URL too malformed to be parsed (``http://[oops/``) is replaced whole by the marker.
        """
        try:
            redacted = _log.redact_url(url, cast("frozenset[str]", self.query_params))
        except ValueError:
            return self.marker
        if redacted is url or self.marker == REDACTED:
            return redacted
        return redacted.replace(REDACTED, self.marker)

    def header_items(self, items: Iterable[tuple[str, str]]) -> dict[str, str | list[str]]:
        """Headers as a dict for a log (repeated names give a list), secret values replaced."""
        out: dict[str, str | list[str]] = {}
        marker = self.marker
        for name, value in items:
            shown = marker if self.is_secret_header(name) else value
            previous = out.get(name)
            if previous is None:
                out[name] = shown
            elif isinstance(previous, list):
                previous.append(shown)
            else:
                out[name] = [previous, shown]
        return out

    def body(self, body: bytes, content_type: str | None, limit: int) -> str:
        """``body`` as text for a log: secret fields of form and JSON bodies redacted, truncated.

        A JSON body too large or too broken to be redacted is not shown at all.
        """
        kind = (content_type or "").split(";", 1)[0].strip().lower()
        if kind == "application/x-www-form-urlencoded":
            text = body.decode("latin-1")
            redacted = _log._redact_params(text, cast("frozenset[str]", self.query_params))
            if redacted is not text and self.marker != REDACTED:
                redacted = redacted.replace(REDACTED, self.marker)
            data = redacted.encode("latin-1")
        elif kind.endswith(("/json", "+json")):
            cleaned = self._json(body)
            if cleaned is None:
                return f"[{len(body)} bytes of JSON not shown: it could not be redacted]"
            data = cleaned
        else:
            data = body
        shown = data[:limit].decode("utf-8", "replace")
        if len(data) > limit:
            shown += f"...[{len(data) - limit} more bytes]"
        return shown

    def _json(self, body: bytes) -> bytes | None:
        if len(body) > _MAX_JSON:
            return None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None
        try:
            cleaned = self._clean(document)
            return json.dumps(cleaned, ensure_ascii=False).encode("utf-8")
        except RecursionError:
            return None

    def _clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: self.marker if self._secret_field(key) else self._clean(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._clean(item) for item in value]
        return value

    def _secret_field(self, name: str) -> bool:
        lowered = name.lower()
        return lowered in self.query_params or self.is_secret_header(lowered)

    def message(self, message: str, secrets: Iterable[str]) -> str:
        """An error message with URLs redacted and every known secret value replaced.

        Args:
            message: the exception's text (httpx messages can contain URLs).
            secrets: the secret values the request carried (header values, parameters...).
        """
        text = _URL_IN_TEXT.sub(
            lambda match: self.url(match.group(0)), message[: _MAX_MESSAGE * 10]
        )
        for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, self.marker)
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        return text


DEFAULT_REDACTIONS = Redactions()
"""The default :class:`Redactions`: see :data:`SECRET_HEADERS`, :data:`SECRET_HEADER_PATTERNS`
and ``SECRET_QUERY_PARAMS``, with the marker ``[REDACTED]``."""


def _level(field_name: str, value: object) -> int:
    if isinstance(value, str) and value.lower() in _LEVELS:
        return _LEVELS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in _LEVEL_NAMES:
        return value
    raise ValueError(
        f"Log.{field_name} must be one of {tuple(_LEVELS)} (or a logging level number), "
        f"got {value!r}"
    )


# one ready-made emitter per level for the library's own logger (no allocation per event)
_STDLIB_EMIT: dict[int, Emit] = {
    number: functools.partial(_log.emit, _events, number) for number in _LEVEL_NAMES
}


def _stdlib_sink(levelno: int) -> Emit | None:
    stdlib = _events.stdlib
    if not stdlib.isEnabledFor(levelno):
        return None
    # An application that configured no handler at all would get WARNING records printed by
    # logging's "last resort" handler: nothing is printed unless the application asks for it.
    if levelno >= logging.WARNING and not stdlib.hasHandlers():
        return None
    return _STDLIB_EMIT[levelno]


def _user_sink(logger: Any, levelno: int) -> Emit | None:
    name = _LEVEL_NAMES[levelno]
    kind = type(logger)
    if getattr(kind, name, None) is _NOP:
        return None
    is_enabled_for = getattr(kind, "is_enabled_for", None)
    if is_enabled_for is not None and not is_enabled_for(logger, levelno):
        return None
    method: Emit = getattr(logger, name)
    return method


@dataclass(frozen=True, slots=True)
class Log:
    """What the logging layer logs, and where. Immutable; change with :meth:`replace`.

    Used as the policy of a :class:`~resilience.LogTransport` and as a per-request override
    (``extensions={"resilience": {"log": policy}}``; ``None`` turns logging off for one
    request).

    Args:
        logger: a structlog-style bound logger (``debug``/``info``/``warning``... taking an event
            name and keyword fields). ``None``: the library's own stdlib logger
            ``"resilience.http"``, so the application's logging setup decides where events go
            (nothing is printed unless it configures logging).
        redact: what is redacted before the logger is called.
        level: the level of successful requests and attempts.
        failure_level: the level of ``http_error`` (status >= 400) and ``error`` outcomes.
        request_id_header: the request header a request id is read from (and sent in).
        send_request_id: set a generated request id on the request, so the server sees it.
        log_headers: add the (redacted) request and response headers to each event.
        log_bodies: add bodies already in memory (never read from a stream), redacted and
            truncated to ``body_limit`` bytes.
        body_limit: the most bytes of a body logged (0 to 1 MiB).

    Raises:
        TypeError: a field of the wrong type (a stdlib ``logging.Logger`` as ``logger``).
        ValueError: a bad level name, header name or body limit.
    """

    logger: Any = None
    redact: Redactions = DEFAULT_REDACTIONS
    level: str | int = "info"
    failure_level: str | int = "warning"
    request_id_header: str = "X-Request-ID"
    send_request_id: bool = False
    log_headers: bool = False
    log_bodies: bool = False
    body_limit: int = 1024
    _levelno: int = field(init=False, repr=False, compare=False, default=logging.INFO)
    _failure_levelno: int = field(init=False, repr=False, compare=False, default=logging.WARNING)
    # quiet()'s last answer for the stdlib loggers, with the logging state it was given for
    _quiet_memo: tuple[tuple[object, ...], bool] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        logger = self.logger
        if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
            raise TypeError(
                "Log.logger must be a structlog-style logger (methods taking an event and "
                f"keyword fields), got the stdlib logger {logger!r}: pass logger=None and "
                'configure logging for "resilience.http", or wrap it with structlog.wrap_logger'
            )
        check_instance("Log", "redact", self.redact, Redactions)
        levelno = _level("level", self.level)
        failure_levelno = _level("failure_level", self.failure_level)
        object.__setattr__(self, "level", _LEVEL_NAMES[levelno])
        object.__setattr__(self, "failure_level", _LEVEL_NAMES[failure_levelno])
        object.__setattr__(self, "_levelno", levelno)
        object.__setattr__(self, "_failure_levelno", failure_levelno)
        if logger is not None and type(logger) is not _LAZY_PROXY:  # a proxy resolves lazily
            for name in {"debug", _LEVEL_NAMES[levelno], _LEVEL_NAMES[failure_levelno]}:
                if not callable(getattr(logger, name, None)):
                    raise TypeError(
                        f"Log.logger must have a callable {name}() method, got {logger!r}"
                    )
        header: object = self.request_id_header
        if not isinstance(header, str) or not _TOKEN.fullmatch(header):
            raise ValueError(f"Log.request_id_header must be a header name, got {header!r}")
        check_instance("Log", "send_request_id", self.send_request_id, bool)
        check_instance("Log", "log_headers", self.log_headers, bool)
        check_instance("Log", "log_bodies", self.log_bodies, bool)
        check_number(
            "Log", "body_limit", self.body_limit, minimum=0, maximum=_MAX_BODY_LIMIT, integer=True
        )

    def replace(self, **changes: Any) -> Log:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def levelno(self) -> int:
        """``level`` as a stdlib level number."""
        return self._levelno

    @property
    def failure_levelno(self) -> int:
        """``failure_level`` as a stdlib level number."""
        return self._failure_levelno

    def sink(self, levelno: int) -> Emit | None:
        """The function that emits an event at ``levelno``, or None when that level is off.

        Nothing is computed for an event before this says yes. For a user's logger: a
        structlog filtering logger's no-op method, or ``is_enabled_for`` (structlog's native
        and stdlib bound loggers) saying no, means off; any other logger filters for itself.
        """
        logger: Any = self.logger
        if logger is None:
            return _stdlib_sink(levelno)
        if type(logger) is _LAZY_PROXY:
            logger = logger.bind()  # what the proxy does on each call anyway
        return _user_sink(logger, levelno)

    def sinks(self) -> tuple[Emit | None, Emit | None]:
        """``(sink(level), sink(failure_level))``, resolving a lazy structlog proxy only once."""
        logger: Any = self.logger
        if logger is None:
            return _stdlib_sink(self._levelno), _stdlib_sink(self._failure_levelno)
        if type(logger) is _LAZY_PROXY:
            logger = logger.bind()
        return _user_sink(logger, self._levelno), _user_sink(logger, self._failure_levelno)

    def quiet(self) -> bool:
        """``sinks() == (None, None)`` and no library logger on: asked on every request.

        With no logger of its own the answer is remembered, with the state of the library's
        stdlib loggers it was given for, and given again while that state is unchanged.
        """
        if self.logger is not None:
            ok, failed = self.sinks()
            return ok is None and failed is None and not library_logging_enabled()
        stdlib = _events.stdlib
        if not _STANDARD_LOGGERS:
            return self._stdlib_quiet()
        # What the answer depends on, read without a call: "resilience.http" is the child of
        # "resilience", the root's child, and for standard loggers whether either can emit
        # follows from their levels, the root's, logging.disable(), the disabled flags, which
        # of the three have handlers, and propagation. Unchanged since last time: same answer.
        library = _LIBRARY
        root = library.parent
        state = (
            _MANAGER.disable,
            stdlib.disabled,
            library.disabled,
            stdlib.level,
            library.level,
            root.level if root is not None else None,
            not stdlib.handlers,
            not library.handlers,
            root is None or not root.handlers,
            stdlib.propagate,
            library.propagate,
            stdlib.parent,
            root,
        )
        memo = self._quiet_memo
        if memo is not None and memo[0] == state:
            return memo[1]
        quiet = self._stdlib_quiet()
        object.__setattr__(self, "_quiet_memo", (state, quiet))
        return quiet

    def _stdlib_quiet(self) -> bool:
        """:meth:`quiet` for the library's stdlib loggers, asked anew."""
        return (
            _stdlib_sink(self._levelno) is None
            and _stdlib_sink(self._failure_levelno) is None
            and not library_logging_enabled()
        )

    def active(self) -> bool:
        """Whether any event of this policy's levels (success or failure) could be emitted."""
        ok, failed = self.sinks()
        return ok is not None or failed is not None


def library_logging_enabled() -> bool:
    """Whether the library's stdlib loggers (``"resilience.*"``) could emit anything.

    When they can, the request layer binds ``request_id`` for the other layers' events even if
    its own events are off: INFO is enabled, or WARNING is and a handler is configured.
    """
    if _LIBRARY.isEnabledFor(logging.INFO):
        return True
    return _LIBRARY.isEnabledFor(logging.WARNING) and _LIBRARY.hasHandlers()


def clean_request_id(value: str) -> str:
    """A request id taken from a header, bounded (hostile headers can be huge)."""
    return value[:_MAX_REQUEST_ID]


def url_secrets(url_query: str, userinfo: str, redactions: Redactions) -> list[str]:
    """The secret values of a URL (for scrubbing error messages): userinfo and parameters."""
    found: list[str] = []
    if userinfo:
        user, colon, password = userinfo.partition(":")
        found += [password, unquote_plus(password)] if colon else [user, unquote_plus(user)]
    if "=" in url_query:
        for piece in url_query.split("&"):
            name, sep, value = piece.partition("=")
            if sep and value and unquote_plus(name).lower() in redactions.query_params:
                found += [value, unquote_plus(value)]
    return found


def header_secrets(items: Iterable[tuple[str, str]], redactions: Redactions) -> list[str]:
    """The secret header values among ``items`` (and the credentials after an auth scheme)."""
    found: list[str] = []
    for name, value in items:
        if redactions.is_secret_header(name):
            found.append(value)
            _scheme, space, credentials = value.partition(" ")
            if space and credentials:
                found.append(credentials.strip())
    return found
