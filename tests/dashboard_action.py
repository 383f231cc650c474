"""A check the suites share: a dashboard action refused without the token, done with it."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest


def assert_action_needs_the_token(url: str, token: str, timeout: float = 10) -> None:
    """POST `url` (a dashboard action) as a script would: 403 without the token, then
    200 with it in the X-Orchestrator-Token header."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=timeout)
    assert refused.value.code == 403
    allowed = urllib.request.Request(url, method="POST", headers={"X-Orchestrator-Token": token})
    with urllib.request.urlopen(allowed, timeout=timeout) as reply:
        assert reply.status == 200
