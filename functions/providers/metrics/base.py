"""Metric provider interface: a float, or NoData / ProviderUnavailable — never a silent pass."""

from __future__ import annotations

from typing import Protocol


class MetricProvider(Protocol):
    def query(self, promql: str) -> float:
        """One scalar; raises functions.errors.NoData or ProviderUnavailable."""

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Every series of an instant vector as (labels, value); [] means no data."""

    def is_online(self) -> bool: ...
