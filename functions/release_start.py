"""Function: An image was pushed: start a release (or supersede the running one).

The caller is authenticated before the body is read (functions/internal_auth.py: the broker's OIDC token,
or GRAYLANE_INTERNAL_TOKEN; nothing configured refuses every call). Only events an edge attested are
handled (the actor, app and fields are the ones graylane's gateway authenticated); others get 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import functions_framework

from functions.core.events import IMAGE_PUSHED
from functions.internal_auth import functions_framework_guard, origin_or_403
from functions.runtime import runner

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

AUTH = functions_framework_guard()


@functions_framework.cloud_event
def release_start(cloud_event: CloudEvent) -> None:
    origin_or_403(AUTH, cloud_event)
    runner().handle_cloudevent(cloud_event, expect=(IMAGE_PUSHED,))
