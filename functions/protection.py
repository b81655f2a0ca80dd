"""Function: An Alertmanager alert: tighten or relax protection, roll back a named canary."""

from __future__ import annotations

from typing import Any

import functions_framework

from functions.core.events import ALERT_FIRING, ALERT_RESOLVED
from functions.runtime import runner


@functions_framework.cloud_event
def protection(cloud_event: Any) -> None:
    runner().handle_cloudevent(cloud_event, expect=(ALERT_FIRING, ALERT_RESOLVED))
