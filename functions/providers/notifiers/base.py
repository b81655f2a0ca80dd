"""Notifier interface. A notifier that is down never blocks or fails a release."""

from __future__ import annotations

from typing import Any, Protocol


class Notifier(Protocol):
    def send(self, notice: dict[str, Any]) -> None:
        """Deliver one notice (transition, gate, verdict...); raises ProviderUnavailable on failure."""
