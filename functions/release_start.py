"""Function: An image was pushed: start a release (or supersede the running one)."""

from __future__ import annotations

from typing import Any

import functions_framework

from functions.core.events import IMAGE_PUSHED
from functions.runtime import runner


@functions_framework.cloud_event
def release_start(cloud_event: Any) -> None:
    runner().handle_cloudevent(cloud_event, expect=(IMAGE_PUSHED,))
