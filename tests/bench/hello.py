"""The baseline for cold start: a hello-world functions-framework CloudEvent function."""

from typing import Any

import functions_framework


@functions_framework.cloud_event
def hello(cloud_event: Any) -> None:
    print(cloud_event["id"])
