"""Function: An analysis tick: look at metrics, fire timers, re-apply what is pending."""

from __future__ import annotations

from typing import Any

import functions_framework

from functions.core.events import KNATIVE_PING, RELEASE_TICK
from functions.runtime import runner


@functions_framework.cloud_event
def release_tick(cloud_event: Any) -> None:
    runner().handle_cloudevent(cloud_event, expect=(RELEASE_TICK, KNATIVE_PING))
