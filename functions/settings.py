"""Process settings from an injected mapping (the environment by default), validated at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping

from functions.core.values import value
from functions.errors import ConfigError

PROVIDERS = ("recording", "kubernetes")


@value
class Settings:
    store: str = (
        "sqlite:///graylane.db"  # sqlite:///PATH | memory:// | configmap://[?context=..&namespaces=..]
    )
    policies: str = "infra/examples"  # a directory of policy YAML, or configmap://
    policy_cache: str = ""  # compiled policies: a directory, "off", or "" for ~/.cache/graylane/policies
    providers: str = "recording"  # recording | kubernetes
    sink: str = ""  # Knative Broker URL for emitted events (K_SINK); empty: not published
    sink_token_file: str = ""  # bearer token for the Broker (its OIDC audience), re-read per event
    prometheus: str = "http://127.0.0.1:9090"
    source: str = "/graylane/functions"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()  # the defaults (a slotted class has no class-level default attributes)
        s = cls(
            store=env.get("GRAYLANE_STORE", d.store),
            policies=env.get("GRAYLANE_POLICIES", d.policies),
            policy_cache=env.get("GRAYLANE_POLICY_CACHE", d.policy_cache),
            providers=env.get("GRAYLANE_PROVIDERS", d.providers),
            sink=env.get("K_SINK", env.get("GRAYLANE_SINK", "")),
            sink_token_file=env.get("GRAYLANE_SINK_TOKEN_FILE", ""),
            prometheus=env.get("GRAYLANE_PROMETHEUS", d.prometheus),
            source=env.get("GRAYLANE_SOURCE", d.source),
        )
        if s.providers not in PROVIDERS:
            raise ConfigError(
                f"GRAYLANE_PROVIDERS={s.providers!r} is not allowed; expected one of {', '.join(PROVIDERS)}"
            )
        if "://" not in s.store:
            raise ConfigError(
                f"GRAYLANE_STORE={s.store!r} is not a store URL (sqlite:///PATH, memory://, configmap://)"
            )
        return s
