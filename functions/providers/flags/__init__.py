"""Flag documents: where a flag stage's exposure is written (flagd's format, functions/providers/flags/flagd.py).

    store = flag_store(policy.flags, namespace, api_client)   # a ConfigMap key, or a file
    store.set_flag(plan)        # idempotent; compare-and-swap; raises NotReady until it reads back
    store.live(plans)           # the plans the document serves as graylane wrote them

flagd reads the file (`--uri file:...`, a ConfigMap mounted as a volume) and the OpenFeature SDK's flagd
provider in-process reads the same file (`offline_flag_source_path`) or asks flagd over its API.
"""

from __future__ import annotations

from typing import Any, Protocol

from functions.core.effects import FlagPlan
from functions.core.policy import FlagSource
from functions.errors import ConfigError


class FlagStore(Protocol):
    def set_flag(self, plan: FlagPlan) -> None: ...
    def live(self, plans: tuple[FlagPlan, ...]) -> tuple[FlagPlan, ...]: ...


def flag_store(source: FlagSource | None, namespace: str, api_client: Any = None) -> FlagStore:
    """The store spec.flags names: its file, else its ConfigMap (through `api_client`)."""
    if source is None:
        raise ConfigError(
            "a flag stage needs spec.flags (a ConfigMap or a file holding flagd's flag document)"
        )
    if source.file:
        from functions.providers.flags.file import FileFlags

        return FileFlags(source.file)
    if not source.config_map:
        raise ConfigError("spec.flags names neither a configMap nor a file")
    if api_client is None:
        raise ConfigError(
            f"spec.flags.configMap {source.config_map}: these providers have no Kubernetes client; "
            "use spec.flags.file, or GRAYLANE_PROVIDERS=kubernetes"
        )
    from functions.providers.flags.configmap import ConfigMapFlags

    return ConfigMapFlags(api_client, namespace, source.config_map, source.key)
