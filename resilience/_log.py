"""The library's structured events: structlog over stdlib logging, with no global configuration.

Events go to stdlib loggers under ``"resilience"`` (``"resilience.retry"``...), so the
application's logging or structlog setup decides where they go and at which level. Nothing is
configured at import, and an application that configures nothing sees nothing below WARNING.
A filtered-out event costs one ``isEnabledFor`` check.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import structlog

__all__ = ["REDACTED", "SECRET_QUERY_PARAMS", "EventLogger", "redact_url"]

REDACTED = "[REDACTED]"

SECRET_QUERY_PARAMS: frozenset[str] = frozenset(
    {
        "access_token", "api-key", "api_key", "apikey", "auth", "authorization", "client_secret",
        "code", "id_token", "key", "passwd", "password", "pwd", "refresh_token", "secret",
        "session", "sessionid", "sig", "signature", "token", "x-amz-credential",
        "x-amz-security-token", "x-amz-signature", "x-goog-credential", "x-goog-signature",
    }
)  # fmt: skip
"""Query parameters whose values never reach a log (compared case-insensitively)."""


def _redact_params(params: str, secrets: frozenset[str]) -> str:
    """``params`` (``a=1&b=2``) with secret values replaced; the same object when none is."""
    if "=" not in params:
        return params
    pieces = params.split("&")
    changed = False
    for index, piece in enumerate(pieces):
        name, sep, value = piece.partition("=")
        if sep and value != REDACTED and unquote_plus(name).lower() in secrets:
            pieces[index] = f"{name}={REDACTED}"
            changed = True
    return "&".join(pieces) if changed else params


def redact_url(url: str, secrets: frozenset[str] = SECRET_QUERY_PARAMS) -> str:
    """``url`` with its userinfo secrets and the values of secret parameters replaced.

    >>> redact_url("https://u:pw@api.test/v1?token=abc&page=2")
    'https://u:[REDACTED]@api.test/v1?token=[REDACTED]&page=2'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        # user:password keeps the user; a lone user part is often a token (https://TOKEN@host)
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{REDACTED}@{hostport}"
    query = _redact_params(parts.query, secrets)
    fragment = _redact_params(parts.fragment, secrets)  # OAuth implicit flows put tokens here
    if netloc is parts.netloc and query is parts.query and fragment is parts.fragment:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


class EventLogger:
    """Emits structlog events through one stdlib logger, at no cost when its level is off."""

    __slots__ = ("_bound", "stdlib")

    def __init__(self, name: str) -> None:
        self.stdlib = logging.getLogger(name)
        self._bound: Any = structlog.wrap_logger(
            self.stdlib,
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.processors.format_exc_info,
                structlog.stdlib.render_to_log_kwargs,
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
        ).bind()

    def info(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at INFO with ``fields``, if the logger's level lets INFO through."""
        if self.stdlib.isEnabledFor(logging.INFO):
            self._bound.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Emit ``event`` at WARNING with ``fields``, if the logger's level lets WARNING through."""
        if self.stdlib.isEnabledFor(logging.WARNING):
            self._bound.warning(event, **fields)


def emit(events: EventLogger, level: int, event: str, **fields: Any) -> None:
    """Emit ``event`` at the stdlib ``level`` through ``events``; the caller checked the level.

    For callers that gate on ``events.stdlib.isEnabledFor(level)`` themselves, before
    computing any field.
    """
    events._bound.log(level, event, **fields)
