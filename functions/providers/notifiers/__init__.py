"""Notifiers: a policy's `notify:` list -> one notifier that tells every channel about a transition.

    notifier = make_notifier(policy.notify, secrets)   # secrets: reference name -> value
    notifier.send(notice)                              # never raises, takes at most ~Delivery.budget

Each channel (Slack, DingTalk, Feishu, WeCom, a generic webhook, Microsoft Teams) retries on its own with backoff inside
a bounded budget; channels are tried in parallel, and a channel that is down is logged and recorded in
`FanOut.failures` but never raises, so it can neither block nor fail a release.

A spec's `secret` names a secret; its value is looked up in `secrets` under the name itself, then under
`GRAYLANE_SECRET_<NAME>` (upper case, other characters as `_`; `secrets` defaults to the environment).
The value holds the webhook URL (when the spec has no `url`; Slack and WeCom URLs are credentials)
and/or the signing key (DingTalk, Feishu, webhook HMAC), separated by whitespace.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from functions.core.policy import NotifySpec
from functions.core.values import value
from functions.errors import ConfigError, GraylaneError
from functions.providers.notifiers._http import DEFAULT_DELIVERY, Delivery
from functions.providers.notifiers.base import Notifier
from functions.providers.notifiers.dingtalk import DingTalkNotifier
from functions.providers.notifiers.feishu import FeishuNotifier
from functions.providers.notifiers.slack import SlackNotifier
from functions.providers.notifiers.teams import TeamsNotifier
from functions.providers.notifiers.webhook import WebhookNotifier
from functions.providers.notifiers.wecom import WeComNotifier

log = logging.getLogger("graylane.notify")

NOTIFIERS: dict[str, type] = {
    "slack": SlackNotifier,
    "dingtalk": DingTalkNotifier,
    "feishu": FeishuNotifier,
    "wecom": WeComNotifier,
    "webhook": WebhookNotifier,
    "teams": TeamsNotifier,
}

__all__ = ["NOTIFIERS", "Delivery", "Failure", "FanOut", "make_notifier", "resolve"]


@value
class Failure:
    channel: str  # "<index>:<kind>", e.g. "0:slack"
    notice: str  # the notice id
    error: str


def resolve(spec: NotifySpec, secrets: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(webhook URL, signing key) of a spec, reading its secret reference; ConfigError names what is missing."""
    url, key = spec.url, ""
    if spec.secret:
        env = os.environ if secrets is None else secrets
        name = "GRAYLANE_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", spec.secret).upper()
        value = env.get(spec.secret) or env.get(name)
        if value is None:
            raise ConfigError(f"{spec.kind} notifier: secret {spec.secret!r} is not set (nor {name})")
        parts = value.split()
        urls = [p for p in parts if p.startswith(("http://", "https://"))]
        url = url or (urls[0] if urls else "")
        key = " ".join(p for p in parts if p not in urls)
    if not url:
        raise ConfigError(f"{spec.kind} notifier: no url; set notify.url or a secret holding the URL")
    return url, key


def make_notifier(
    specs: tuple[NotifySpec, ...],
    secrets: Mapping[str, str] | None = None,
    delivery: Delivery = DEFAULT_DELIVERY,
) -> FanOut:
    """One notifier for all of a policy's channels. An unknown kind is a ConfigError listing the known ones;
    a channel whose URL or secret cannot be resolved fails each send (logged, recorded), alone."""
    channels: list[tuple[str, Notifier | ConfigError]] = []
    for i, spec in enumerate(specs):
        cls = NOTIFIERS.get(spec.kind)
        if cls is None:
            raise ConfigError(
                f"notify[{i}].kind: unknown notifier {spec.kind!r}; known: {', '.join(NOTIFIERS)}"
            )
        try:
            url, key = resolve(spec, secrets)
            channels.append((f"{i}:{spec.kind}", cls(url, key, delivery)))
        except ConfigError as err:
            channels.append((f"{i}:{spec.kind}", err))
    return FanOut(channels, delivery)


class FanOut:
    """Sends one notice to every channel in parallel; never raises. Remembers the last 100 outcomes."""

    def __init__(
        self, channels: list[tuple[str, Notifier | ConfigError]], delivery: Delivery = DEFAULT_DELIVERY
    ) -> None:
        self.channels = channels
        self.delivery = delivery
        self.failures: deque[Failure] = deque(maxlen=100)
        self.delivered: deque[tuple[str, str]] = deque(maxlen=100)  # (channel, notice id)
        self._lock = threading.Lock()

    def send(self, notice: dict[str, Any]) -> None:
        if len(self.channels) == 1:
            self._one(*self.channels[0], notice)
            return
        threads = [
            threading.Thread(target=self._one, args=(name, ch, notice), name=f"notify-{name}", daemon=True)
            for name, ch in self.channels
        ]
        for t in threads:
            t.start()
        for t in threads:  # every channel is bounded by its budget; the margin covers the last request
            t.join(self.delivery.budget + self.delivery.timeout)
        for t, (name, _) in zip(threads, self.channels, strict=True):
            if t.is_alive():
                self._failed(name, notice, "still sending after its budget; left running in the background")

    def _one(self, name: str, channel: Notifier | ConfigError, notice: dict[str, Any]) -> None:
        if isinstance(channel, ConfigError):
            self._failed(name, notice, str(channel))
            return
        try:
            channel.send(notice)
        except GraylaneError as err:
            self._failed(name, notice, str(err))
        except Exception as err:  # a notifier bug must not fail the release either
            log.exception("notifier %s crashed", name)
            self._failed(name, notice, f"{type(err).__name__}: {err}")
        else:
            with self._lock:
                self.delivered.append((name, str(notice.get("id", ""))))

    def _failed(self, name: str, notice: dict[str, Any], error: str) -> None:
        log.warning(
            "notice %s of %s not delivered to %s: %s",
            notice.get("id", ""),
            notice.get("app", ""),
            name,
            error,
        )
        with self._lock:
            self.failures.append(Failure(name, str(notice.get("id", "")), error))
