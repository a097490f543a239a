"""redact_url: secrets in query strings and userinfo never reach a log."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience._log import REDACTED, SECRET_QUERY_PARAMS, redact_url


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "api_key",
        "access_token",
        "signature",
        "client_secret",
        "TOKEN",
        "Api_Key",
        "Access_Token",
        "X-Amz-Signature",
        "api%5Fkey",
        "api%5fkey",
        "%74oken",
    ],
)
def test_secret_params_are_redacted(name: str) -> None:
    """A secret parameter's value is replaced, its name kept as written, others untouched."""
    url = f"https://api.test/v1/items?page=2&{name}=s3cr3t&sort=asc"
    assert redact_url(url) == f"https://api.test/v1/items?page=2&{name}={REDACTED}&sort=asc"


def test_several_secrets_and_order_are_kept() -> None:
    """Every secret is redacted and the parameters keep their order."""
    url = "https://api.test/v1?z=1&token=a&a=2&signature=b&m=3&token=c#frag"
    assert redact_url(url) == (
        f"https://api.test/v1?z=1&token={REDACTED}&a=2&signature={REDACTED}&m=3"
        f"&token={REDACTED}#frag"
    )


def test_secret_with_empty_value_is_redacted() -> None:
    """``token=`` is still replaced (nothing leaks either way, and the shape is uniform)."""
    assert redact_url("https://api.test/?token=") == f"https://api.test/?token={REDACTED}"


def test_userinfo_password_is_redacted() -> None:
    """The password of ``user:password@`` is replaced; the user name stays."""
    url = "https://alice:hunter2@api.test:8443/v1?page=1"
    assert redact_url(url) == f"https://alice:{REDACTED}@api.test:8443/v1?page=1"


def test_userinfo_password_with_at_sign_is_redacted() -> None:
    """A password holding ``@`` is redacted whole."""
    assert redact_url("https://bob:p@ss@api.test/") == f"https://bob:{REDACTED}@api.test/"


def test_userinfo_without_password_is_redacted() -> None:
    """A lone user part is often a token (https://TOKEN@host), so it is redacted too."""
    assert redact_url("https://ghp_abc123@api.test/v1") == "https://[REDACTED]@api.test/v1"


NO_SECRETS = [
    "https://api.test/v1",
    "https://api.test/v1?page=2",
    "https://api.test/v1?page=2&size=50&sort=asc",
    "https://api.test/v1?tokens=1&my_token=2&keyword=x",
    "https://api.test/v1?page=2&size=3#section",
    "http://127.0.0.1:8080/a/b?x=1&y",
]


@pytest.mark.parametrize("url", NO_SECRETS)
def test_url_without_secrets_is_returned_unchanged(url: str) -> None:
    """A URL with nothing to redact comes back equal."""
    assert redact_url(url) == url


@pytest.mark.parametrize("url", NO_SECRETS)
def test_url_without_secrets_is_the_same_object(url: str) -> None:
    """A URL with nothing to redact is returned itself, not rebuilt (the fast path's intent)."""
    assert redact_url(url) is url


@pytest.mark.parametrize(
    "url",
    [
        "https://api.test/v1?page=2&size=3#",
        "HTTPS://api.test/v1?page=2&size=3",
    ],
)
def test_url_without_secrets_is_not_normalised(url: str) -> None:
    """Nothing is rewritten when nothing is redacted: no dropped ``#``, no re-cased scheme."""
    assert redact_url(url) == url


def test_custom_secret_names() -> None:
    """A caller's own set of names replaces the default one."""
    url = "https://api.test/?session_id=abc&token=def"
    assert redact_url(url, frozenset({"session_id"})) == (
        f"https://api.test/?session_id={REDACTED}&token=def"
    )


SAFE_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: name not in SECRET_QUERY_PARAMS
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(SAFE_NAMES, st.text(), min_size=1, max_size=6))
def test_safe_params_are_left_alone(params: dict[str, str]) -> None:
    """Any query made only of non-secret names comes back unchanged."""
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    url = f"https://api.test/v1/items?{query}"
    assert redact_url(url) == url


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(min_size=1),
    before=st.dictionaries(SAFE_NAMES, st.text(), max_size=3),
    after=st.dictionaries(SAFE_NAMES, st.text(), max_size=3),
)
def test_token_value_never_appears(
    secret: str, before: dict[str, str], after: dict[str, str]
) -> None:
    """Whatever the token, only ``[REDACTED]`` stands in its place and the rest is intact."""

    def encode(params: dict[str, str]) -> list[str]:
        return [f"{name}={quote(value, safe='')}" for name, value in params.items()]

    head, tail = encode(before), encode(after)
    url = "https://api.test/v1?" + "&".join([*head, f"token={quote(secret, safe='')}", *tail])
    expected = "https://api.test/v1?" + "&".join([*head, f"token={REDACTED}", *tail])
    assert redact_url(url) == expected
