"""Function: A command (approve, reject, weight, promote, pause, resume, abort, rollback)."""

from __future__ import annotations

from typing import Any

import functions_framework

from functions.core.events import RELEASE_COMMAND
from functions.runtime import runner


@functions_framework.cloud_event
def release_command(cloud_event: Any) -> None:
    runner().handle_cloudevent(cloud_event, expect=(RELEASE_COMMAND,))
