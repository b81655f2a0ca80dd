"""Function: An analysis tick: look at metrics, fire timers, re-apply what is pending.

The caller is authenticated before the body is read (functions/internal_auth.py: the broker's OIDC token,
or GRAYLANE_INTERNAL_TOKEN; nothing configured refuses every call). Ticks need no edge attestation: a
sweep only makes due work happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import functions_framework

from functions.core.events import KNATIVE_PING, RELEASE_TICK
from functions.internal_auth import functions_framework_guard, origin_or_403
from functions.runtime import runner

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

AUTH = functions_framework_guard()


@functions_framework.cloud_event
def release_tick(cloud_event: CloudEvent) -> None:
    origin_or_403(AUTH, cloud_event)
    runner().handle_cloudevent(cloud_event, expect=(RELEASE_TICK, KNATIVE_PING))
