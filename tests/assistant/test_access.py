"""The access rules every wire shares: bearer tokens, browser origins, loopback addresses."""

from __future__ import annotations

import pytest

from assistant.access import bearer_token, is_loopback, origin_allowed, principal_of
from assistant.auth import LOCAL_PRINCIPAL, Authenticator, ConfiguredToken, token_hash


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("192.168.1.5", False), ("example.com", False),
])
def test_is_loopback(host, loopback):
    """Loopback names and addresses are loopback; the wildcard addresses and others are not."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer ast_abc", "ast_abc"), ("bearer  ast_abc ", "ast_abc"), ("BEARER ast_abc", "ast_abc"),
    ("Bearer", None), ("Bearer   ", None), ("Basic dXNlcjpwdw==", None), ("ast_abc", None), ("", None), (None, None),
])
def test_bearer_token_from_a_header_value(header, token):
    """The token of `Bearer <token>` (scheme in any case, spaces trimmed); anything else, or no header, is None."""
    assert bearer_token(header) == token


@pytest.mark.parametrize(("origin", "host", "allowed", "ok"), [
    ("http://127.0.0.1:8765", "127.0.0.1:8765", [], True),
    ("https://Assistant.Example", "assistant.example", [], True),
    ("http://127.0.0.1:8765", "127.0.0.1:9999", [], False),
    ("https://evil.example", "127.0.0.1:8765", [], False),
    ("https://evil.example", None, [], False),
    ("https://app.example", "127.0.0.1:8765", ["https://app.example"], True),
    ("https://other.example", "127.0.0.1:8765", ["https://app.example"], False),
    ("https://anyone.example", "127.0.0.1:8765", ["*"], True),
    ("null", "null", [], False),
    ("file://127.0.0.1:8765", "127.0.0.1:8765", [], False),
])
def test_origin_allowed(origin, host, allowed, ok):
    """The server's own origin (its Host, case aside, over http or https) and listed ones pass; others do not."""
    assert origin_allowed(origin, host, allowed) is ok


async def test_principal_of_a_token(tmp_path):
    """A configured token names its principal, an unknown or missing one none; with auth off everyone is `local`."""
    auth = Authenticator([ConfiguredToken("erin", token_hash("ast_erin"))], None)
    assert await principal_of(auth, "ast_erin") == "erin"
    assert await principal_of(auth, "ast_wrong") is None
    assert await principal_of(auth, None) is None
    assert await principal_of(Authenticator([], None), None) == LOCAL_PRINCIPAL
