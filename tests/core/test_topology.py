"""What a Redis URL names (`orchestrator.topology`), and how it reads in a log line."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import load_settings, redact_url
from orchestrator.topology import parse


def test_a_sentinel_url_names_its_sentinels_service_database_and_the_data_nodes_login() -> None:
    target = parse("rediss+sentinel://app:pw@10.0.0.1:26379,[::1]:26380/main/3?ssl_cert_reqs=none")
    assert target.kind == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("::1", 26380))
    assert target.service == "main"
    assert target.options["db"] == 3
    assert (target.options["username"], target.options["password"]) == ("app", "pw")
    assert target.options["ssl_cert_reqs"] == "none"
    assert target.sentinel_options == {}


def test_sentinels_get_their_own_credentials_from_the_query() -> None:
    target = parse("redis+sentinel://h:1/m?sentinel_password=s3&sentinel_username=watch")
    assert target.sentinel_options == {"password": "s3", "username": "watch"}
    assert "password" not in target.options


def test_a_cluster_url_names_its_seed_nodes() -> None:
    target = parse("redis+cluster://:pw@n1:7000,n2:7001")
    assert (target.kind, target.nodes) == ("cluster", (("n1", 7000), ("n2", 7001)))
    assert target.options["password"] == "pw"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h1:26379", "name the Sentinel service"),
        ("redis+sentinel:///main", "at least one host:port"),
        ("redis+sentinel://h1/main", "is not host:port"),
        ("redis+sentinel://h1:1/main/x", "must be a number"),
        ("redis+cluster://h1:1/0", "has no path"),
    ],
)
def test_an_unusable_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse(url)


def test_passwords_never_reach_a_log_line() -> None:
    assert redact_url("redis+sentinel://u:pw@h1:1,h2:2/m?sentinel_password=x") == (
        "redis+sentinel://u:***@h1:1,h2:2/m?sentinel_password=***"
    )
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert (
        redact_url("unix:///tmp/r.sock?db=0&password=pw") == "unix:///tmp/r.sock?db=0&password=***"
    )
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("redis://localhost:6379?password=s") == "redis://localhost:6379?password=***"
    assert redact_url("rediss://h/0?ssl_password=kp") == "rediss://h/0?ssl_password=***"
    assert redact_url("redis://app:Zm9v/YmFy@host/0") == "redis://app:***@host/0"
    assert redact_url("redis://app:p@ss@host/0") == "redis://app:***@host/0"


def test_a_refused_url_never_shows_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://app:Zm9v@h1:1/m/x")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "Zm9v" not in str(refused.value)


def test_query_values_are_decoded_once() -> None:
    target = parse("redis+sentinel://h:1/m?password=x%26y&sentinel_password=a%2541")
    assert target.options["password"] == "x&y"
    assert target.sentinel_options == {"password": "a%41"}
