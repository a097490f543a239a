"""``LogTransport``: one structured event per logical request or per attempt, redacted.

Two scopes, one class:

- ``scope="request"`` is the outermost layer of a stack. It emits one ``http.request`` event
  per logical request, binds ``request_id`` in structlog's contextvars for the duration of
  the call (so the other layers' events carry it), and puts a :class:`RequestRecord` in
  ``request.extensions["resilience.log"]``.
- ``scope="attempt"`` sits next to the network, under the retry layer. It emits one
  ``http.attempt`` event per attempt, numbered through the record the request layer left
  (or through its own record when there is no request layer above it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from structlog.contextvars import bind_contextvars, reset_contextvars

from .. import _logging
from .._logging import Emit, Log
from ._httpx import OPTIONS, override
from .cache import CACHE_STATUS

__all__ = ["RECORD", "LogTransport", "RequestRecord"]

RECORD = "resilience.log"
"""``request.extensions[RECORD]``: the :class:`RequestRecord` of the logical request."""

Scope = Literal["request", "attempt"]
_SCOPES = ("request", "attempt")
_DEBUG = 10
_EVENTS = {"request": "http.request", "attempt": "http.attempt"}

Sinks = tuple[Emit | None, Emit | None]
_NO_SINKS: Sinks = (None, None)


@dataclass(slots=True)
class RequestRecord:
    """The small mutable record the two scopes share through the request's extensions.

    Attributes:
        request_id: the id every event of the logical request carries.
        attempts: attempts counted so far by an attempt-scope layer.
        open: True while a request-scope layer is handling the request.
        owner: ``id()`` of the request an attempt-scope layer made this record for.
        log: the request-scope layer's policy, and ``sinks`` what it resolved for this
            request: an attempt layer with the same policy reuses them.
    """

    request_id: str
    attempts: int = 0
    open: bool = False
    owner: int = 0
    log: Log | None = field(default=None, repr=False, compare=False)
    sinks: Sinks = field(default=_NO_SINKS, repr=False, compare=False)


_CLEAR_VERSION = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET_VERSION = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random uuid4 in hex (``uuid.uuid4().hex``, without building a ``UUID``: twice faster)."""
    return f"{int.from_bytes(os.urandom(16), 'big') & _CLEAR_VERSION | _SET_VERSION:032x}"


def _outcome(status: int) -> str:
    return "ok" if status < 400 else "http_error"


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.isdigit() or len(value) > 19:
        return None
    return int(value)


def _request_body(request: httpx.Request) -> bytes | None:
    stream = request.stream
    if not isinstance(stream, httpx.ByteStream):
        return None  # a generator or a file: never read to be logged
    return b"".join(stream)


def _response_body(response: httpx.Response) -> bytes | None:
    try:
        return response.content
    except httpx.ResponseNotRead:
        return None


class LogTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Logs each logical request (``scope="request"``) or each attempt (``scope="attempt"``).

    One class serves both clients. In a stack, one of each: the request scope outermost, the
    attempt scope next to the network (under the retry layer)::

        LogTransport(RetryTransport(LogTransport(inner, log, scope="attempt"), retry), log)

    Every event carries ``request_id``: the request's ``request_id_header`` when present,
    else a generated one (a uuid4 in hex), set on the request when ``send_request_id``. The
    URL, headers, bodies and error messages are redacted before the logger is called. An
    exception from the inner transport is logged and re-raised unchanged; cancellation is
    logged at debug and re-raised; an exception raised by the logger itself is swallowed, so
    logging can never break a request. ``extensions={"resilience": {"log": policy}}``
    replaces the policy for one request; ``{"log": None}`` turns logging off for it.

    Args:
        transport: the transport to wrap (closed when this one is closed).
        log: the policy; ``Log()`` when omitted.
        scope: ``"request"`` (one ``http.request`` event per logical request) or
            ``"attempt"`` (one ``http.attempt`` event per attempt).

    Example:
        >>> import httpx, resilience as rs
        >>> client = httpx.Client(transport=rs.LogTransport(httpx.HTTPTransport(), rs.Log()))
        >>> client.close()
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport,
        log: Log | None = None,
        scope: Scope = "request",
    ) -> None:
        if not isinstance(transport, (httpx.BaseTransport, httpx.AsyncBaseTransport)):
            raise TypeError(f"LogTransport needs an httpx transport to wrap, got {transport!r}")
        if log is None:
            log = Log()
        elif not isinstance(log, Log):
            raise TypeError(f"LogTransport.log must be a Log, got {log!r}")
        if scope not in _SCOPES:
            raise ValueError(f"LogTransport.scope must be one of {_SCOPES}, got {scope!r}")
        self.transport = transport
        self.log = log
        self.scope: Scope = scope

    def __repr__(self) -> str:
        return f"LogTransport({self.transport!r}, {self.log!r}, scope={self.scope!r})"

    # -- what both loops share -----------------------------------------------------------------

    def _policy(self, request: httpx.Request) -> Log | None:
        return override(request, "log", self.log, Log)

    @staticmethod
    def _request_id(request: httpx.Request, log: Log, inherited: RequestRecord | None) -> str:
        """The header's id, else the id of an earlier hop, else a new one (sent if asked)."""
        wanted = log.request_id_header.lower().encode("ascii")
        for name, value in request.headers.raw:  # no Headers.get: it decodes every header
            if name.lower() == wanted:
                return _logging.clean_request_id(value.decode("latin-1"))
        request_id = inherited.request_id if inherited is not None else new_request_id()
        if log.send_request_id:
            request.headers[log.request_id_header] = request_id
        return request_id

    def _open_request(self, request: httpx.Request, log: Log, sinks: Sinks) -> RequestRecord | None:
        """Start a logical request; None when nothing about it will be logged."""
        previous = request.extensions.get(RECORD)
        inherited = previous if isinstance(previous, RequestRecord) else None
        if sinks == _NO_SINKS and not _logging.library_logging_enabled():
            if log.send_request_id:  # sending the id is behaviour, not logging: it still happens
                self._request_id(request, log, inherited)
            return None
        request_id = self._request_id(request, log, inherited)
        record = RequestRecord(request_id, open=True, log=log, sinks=sinks)
        request.extensions[RECORD] = record
        return record

    @staticmethod
    def _unmark_quiet(extensions: dict[str, Any], log: Log, previous: object) -> None:
        """Undo the request layer's quiet mark, putting back what was there before.

        When the request layer finds nothing enabled, it sets ``extensions[RECORD]`` to its
        policy (inline, on every request), so attempt layers with the same policy need not ask
        the loggers again.
        """
        if extensions.get(RECORD) is log:
            if previous is None:
                del extensions[RECORD]
            else:
                extensions[RECORD] = previous

    def _begin_attempt(
        self, request: httpx.Request, log: Log
    ) -> tuple[RequestRecord | None, Sinks]:
        """Count one attempt on the request's record (made here when no layer above made one).

        Not called when the request layer above, with this policy, marked the request quiet.
        """
        record = request.extensions.get(RECORD)
        if isinstance(record, RequestRecord):
            if record.open:  # a request-scope layer above is handling this request
                record.attempts += 1
                return record, record.sinks if record.log is log else log.sinks()
            if record.owner == id(request):  # ours, from an earlier attempt
                record.attempts += 1
                return record, log.sinks()
        sinks = log.sinks()
        if sinks == _NO_SINKS:
            return None, sinks
        inherited = record if isinstance(record, RequestRecord) else None
        request_id = self._request_id(request, log, inherited)
        record = RequestRecord(request_id, attempts=1, owner=id(request))
        request.extensions[RECORD] = record
        return record, sinks

    @staticmethod
    def _common(
        log: Log, request: httpx.Request, record: RequestRecord, started: float
    ) -> dict[str, Any]:
        return {
            "request_id": record.request_id,
            "method": request.method,
            "url": log.redact.url(str(request.url)),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    @staticmethod
    def _details(
        log: Log, fields: dict[str, Any], request: httpx.Request, response: httpx.Response | None
    ) -> None:
        redact = log.redact
        if log.log_headers:
            fields["request_headers"] = redact.header_items(request.headers.multi_items())
            if response is not None:
                fields["response_headers"] = redact.header_items(response.headers.multi_items())
        if log.log_bodies:
            body = _request_body(request)
            if body is not None:
                fields["request_body"] = redact.body(
                    body, request.headers.get("content-type"), log.body_limit
                )
            if response is not None:
                content = _response_body(response)
                if content is not None:
                    fields["response_body"] = redact.body(
                        content, response.headers.get("content-type"), log.body_limit
                    )

    @staticmethod
    def _error_fields(
        log: Log, fields: dict[str, Any], request: httpx.Request, exc: BaseException
    ) -> None:
        redact = log.redact
        url = request.url
        secrets = _logging.url_secrets(
            url.query.decode("ascii", "replace"), url.userinfo.decode("ascii", "replace"), redact
        )
        secrets += _logging.header_secrets(request.headers.multi_items(), redact)
        fields["error"] = type(exc).__name__
        fields["error_message"] = redact.message(str(exc), secrets)

    @staticmethod
    def _emit(emit: Emit, event: str, fields: dict[str, Any]) -> None:
        try:
            emit(event, **fields)
        except Exception:  # a broken logger must never break the request
            pass

    # -- the events ------------------------------------------------------------------------------

    def _done(
        self,
        log: Log,
        sinks: Sinks,
        request: httpx.Request,
        record: RequestRecord,
        started: float,
        response: httpx.Response,
    ) -> None:
        """Emit the event of a request or an attempt that got a response."""
        status = response.status_code
        outcome = _outcome(status)
        emit = sinks[0] if outcome == "ok" else sinks[1]
        if emit is None:
            return
        fields = self._common(log, request, record, started)
        if self.scope == "request":
            fields["status"] = status
            fields["attempts"] = record.attempts
            fields["outcome"] = outcome
            fields["cache"] = response.extensions.get(CACHE_STATUS)
        else:
            fields["attempt"] = record.attempts
            fields["status"] = status
            fields["outcome"] = outcome
            fields["bytes"] = _content_length(response)
        self._details(log, fields, request, response)
        self._emit(emit, _EVENTS[self.scope], fields)

    def _failed(
        self,
        log: Log,
        sinks: Sinks,
        request: httpx.Request,
        record: RequestRecord,
        started: float,
        exc: BaseException,
    ) -> None:
        """Emit the event of a request or an attempt that raised (or was cancelled)."""
        cancelled = not isinstance(exc, Exception)
        emit = log.sink(_DEBUG) if cancelled else sinks[1]
        if emit is None:
            return
        fields = self._common(log, request, record, started)
        if self.scope == "request":
            fields["attempts"] = record.attempts
            fields["cache"] = None
        else:
            fields["attempt"] = record.attempts
            fields["bytes"] = None
        fields["status"] = None
        fields["outcome"] = "cancelled" if cancelled else "error"
        self._error_fields(log, fields, request, exc)
        self._details(log, fields, request, None)
        self._emit(emit, _EVENTS[self.scope], fields)

    # -- sync ------------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"LogTransport wraps an async transport ({transport!r}): "
                "use it with httpx.AsyncClient"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        log = self.log if OPTIONS not in request.extensions else self._policy(request)
        if log is None or request.extensions.get(RECORD) is log:  # off, or marked quiet above
            return transport.handle_request(request)
        if self.scope == "attempt":
            record, sinks = self._begin_attempt(request, log)
            if record is None or sinks == _NO_SINKS:
                return transport.handle_request(request)
            tokens = None
        else:
            if log.quiet() and not log.send_request_id:  # the common case: nothing to do
                # tell attempt layers with this policy that nothing is logged (see _unmark_quiet)
                extensions = request.extensions
                previous = extensions.get(RECORD)
                extensions[RECORD] = log
                try:
                    return transport.handle_request(request)
                finally:
                    if previous is None and extensions.get(RECORD) is log:
                        del extensions[RECORD]  # the common case of _unmark_quiet, inline
                    else:
                        self._unmark_quiet(extensions, log, previous)
            sinks = log.sinks()
            record = self._open_request(request, log, sinks)
            if record is None:
                return transport.handle_request(request)
            tokens = bind_contextvars(request_id=record.request_id)
        started = time.perf_counter()
        try:
            response = transport.handle_request(request)
        except BaseException as exc:
            self._failed(log, sinks, request, record, started, exc)
            raise
        else:
            self._done(log, sinks, request, record, started, response)
        finally:
            if tokens is not None:  # the request scope: the logical request is over
                record.open = False
                reset_contextvars(**tokens)
        return response

    def close(self) -> None:
        transport = self.transport
        if isinstance(transport, httpx.BaseTransport):
            transport.close()

    # -- async -----------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"LogTransport wraps a sync transport ({transport!r}): use it with httpx.Client"
            )
        # the policy, unless this request overrides it (inline: this runs on every request)
        log = self.log if OPTIONS not in request.extensions else self._policy(request)
        if log is None or request.extensions.get(RECORD) is log:  # off, or marked quiet above
            return await transport.handle_async_request(request)
        if self.scope == "attempt":
            record, sinks = self._begin_attempt(request, log)
            if record is None or sinks == _NO_SINKS:
                return await transport.handle_async_request(request)
            tokens = None
        else:
            if log.quiet() and not log.send_request_id:  # the common case: nothing to do
                extensions = request.extensions  # marked quiet inline, as in handle_request
                previous = extensions.get(RECORD)
                extensions[RECORD] = log
                try:
                    return await transport.handle_async_request(request)
                finally:
                    if previous is None and extensions.get(RECORD) is log:
                        del extensions[RECORD]  # the common case of _unmark_quiet, inline
                    else:
                        self._unmark_quiet(extensions, log, previous)
            sinks = log.sinks()
            record = self._open_request(request, log, sinks)
            if record is None:
                return await transport.handle_async_request(request)
            tokens = bind_contextvars(request_id=record.request_id)
        started = time.perf_counter()
        try:
            response = await transport.handle_async_request(request)
        except BaseException as exc:
            self._failed(log, sinks, request, record, started, exc)
            raise
        else:
            self._done(log, sinks, request, record, started, response)
        finally:
            if tokens is not None:  # the request scope: the logical request is over
                record.open = False
                reset_contextvars(**tokens)
        return response

    async def aclose(self) -> None:
        transport = self.transport
        if isinstance(transport, httpx.AsyncBaseTransport):
            await transport.aclose()
