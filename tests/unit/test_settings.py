from __future__ import annotations

import pytest

from functions.errors import ConfigError
from functions.settings import Settings


def test_defaults_apply_when_the_environment_is_empty() -> None:
    s = Settings.from_env({})
    assert (s.store, s.providers, s.sink) == ("sqlite:///graylane.db", "recording", "")


def test_environment_overrides_and_k_sink_wins() -> None:
    s = Settings.from_env({"GRAYLANE_STORE": "memory://", "K_SINK": "http://broker", "GRAYLANE_SINK": "x"})
    assert (s.store, s.sink) == ("memory://", "http://broker")


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("GRAYLANE_PROVIDERS", "magic", "GRAYLANE_PROVIDERS"),
        ("GRAYLANE_STORE", "graylane.db", "GRAYLANE_STORE"),
    ],
)
def test_bad_settings_name_the_key(key: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env({key: value})
