from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.settings import load_settings, redact_url
from orchestrator.stack.record import origin_given, resolve_redis


def test_defaults_put_metal_before_cloud() -> None:
    settings = load_settings()
    assert [p.name for p in settings.ordered_pools] == ["metal", "cloud"]
    assert settings.backlogs == ["backlog:default"]


def test_redis_url_is_honoured_and_prefixed_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    assert load_settings().redis_url == "redis://cache:6379/1"
    monkeypatch.setenv("ORCHESTRATOR_REDIS_URL", "rediss://secure:6380/0")
    assert load_settings().redis_url == "rediss://secure:6380/0"
    assert load_settings(redis_url="unix:///run/redis.sock").redis_url == "unix:///run/redis.sock"


def test_toml_file_is_read_and_environment_overrides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "orchestrator.toml").write_text(
        'backlogs = ["stress", "backlog:default"]\n'
        "heartbeat_interval = 2.5\n"
        '[[pools]]\nname = "metal"\norder = 0\n'
        '[[pools]]\nname = "cloud"\norder = 1\nspill_after = 30\nmax_in_flight = 3\n'
        '[[rules]]\ntask = "image.*"\npool = "cloud"\n'
        '[rate_limits."task:system.sleep"]\nrate = 5\nburst = 1\n'
    )
    settings = load_settings()
    assert settings.backlogs == ["backlog:stress", "backlog:default"]
    assert settings.pools[1].spill_after == 30
    assert settings.rules[0].pool == "cloud"
    assert settings.rate_limits["task:system.sleep"].rate == 5
    monkeypatch.setenv("ORCHESTRATOR_HEARTBEAT_INTERVAL", "1")
    assert load_settings().heartbeat_interval == 1


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "ORCHESTRATOR_HEARTBEAT_INTERVAL",
            "soon",
            "heartbeat_interval: Input should be a valid number",
        ),
        (
            "ORCHESTRATOR_HEARTBEAT_INTERVAL",
            "-1",
            "heartbeat_interval: Input should be greater than 0",
        ),
        ("REDIS_URL", "http://localhost", "redis_url: scheme 'http' is not one of"),
        (
            "ORCHESTRATOR_POOLS",
            '[{"name": "metal", "order": 0}, {"name": "metal", "order": 1}]',
            "unique",
        ),
        ("ORCHESTRATOR_RULES", '[{"task": "image.*", "pool": "gpu"}]', "unknown pool 'gpu'"),
        ("ORCHESTRATOR_BACKLOGS", '["no spaces"]', "backlogs: invalid backlog name"),
        # a trailing newline is no part of a name (a regex's `$` would let it through)
        ("ORCHESTRATOR_BACKLOGS", '["backlog:a\\n"]', "backlogs: invalid backlog name"),
        ("ORCHESTRATOR_RATE_LIMITS", '{"api\\n": {"rate": 1}}', "rate limit name 'api\\n'"),
        ("ORCHESTRATOR_POOLS", '[{"name": "metal\\n", "order": 0}]', "pools.0.name"),
        ("ORCHESTRATOR_NAMESPACE", "orc\n", "namespace: String should match pattern"),
        ("ORCHESTRATOR_HEARTBEAT_INTERVALL", "1", "did you mean ORCHESTRATOR_HEARTBEAT_INTERVAL?"),
    ],
)
def test_invalid_setting_is_one_line_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in caught.value.message
    assert "\n" not in caught.value.message


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_explicit_config_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('namespace = "prod"\n')
    assert load_settings(path).namespace == "prod"


def test_passwords_never_reach_messages() -> None:
    assert redact_url("redis://app:s3cret@db:6379/0") == "redis://app:***@db:6379/0"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("backlog:a", ["backlog:a"]),
        ("backlog:a,backlog:b", ["backlog:a", "backlog:b"]),
        (" stress , backlog:default ", ["backlog:stress", "backlog:default"]),
        ('["backlog:a", "b"]', ["backlog:a", "backlog:b"]),
    ],
)
def test_backlogs_from_the_environment_may_be_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    """`ORCHESTRATOR_BACKLOGS=backlog:a,backlog:b` works as well as a JSON list."""
    monkeypatch.setenv("ORCHESTRATOR_BACKLOGS", value)
    assert load_settings().backlogs == expected


@pytest.mark.parametrize("value", ['["backlog:a",', "", " , ", "[1, 2]"])
def test_backlogs_that_are_still_invalid_are_refused_with_an_example(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Broken JSON, no name at all or non-strings: one line showing how to write it."""
    monkeypatch.setenv("ORCHESTRATOR_BACKLOGS", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message.startswith("invalid configuration: backlogs: ")
    assert "e.g. ORCHESTRATOR_BACKLOGS=backlog:a,backlog:b" in caught.value.message
    assert "\n" not in caught.value.message


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    """tomllib's message names neither the file nor the line the way editors read it."""
    (tmp_path / "orchestrator.toml").write_text('namespace = "x"\n\nheartbeat_interval = \n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message == ("orchestrator.toml:3: invalid TOML: Invalid value (column 22)")
    other = tmp_path / "other.toml"
    other.write_text('backlogs = ["a" "b"]\n')
    with pytest.raises(ConfigError, match=rf"^{other}:1: invalid TOML: Unclosed array"):
        load_settings(other)


def test_a_toml_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows editors start UTF-8 files with a BOM; it is no syntax error."""
    (tmp_path / "orchestrator.toml").write_bytes(b'\xef\xbb\xbfnamespace = "prod"\n')
    assert load_settings().namespace == "prod"


def test_a_childs_redis_url_names_the_stack_that_gave_it_only_while_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`up` tells its children where their REDIS_URL came from; a REDIS_URL pointed
    elsewhere since (by a task's subprocess, or the user) is just REDIS_URL again."""
    given = "redis://127.0.0.1:6399/0"
    monkeypatch.setenv("REDIS_URL", given)
    for name, value in origin_given(given, "orchestrator up, its embedded Redis").items():
        monkeypatch.setenv(name, value)
    _, source = resolve_redis(load_settings(), flag=None, config_file=None)
    assert source.describe() == f"{given} (from orchestrator up, its embedded Redis)"

    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    _, source = resolve_redis(load_settings(), flag=None, config_file=None)
    assert source.origin == "REDIS_URL"
