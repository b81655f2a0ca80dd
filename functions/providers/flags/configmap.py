"""A flag document in a ConfigMap key (mounted into flagd or the app, which read it as a file).

The key's text is edited as in a file (only graylane's flag changes, byte for byte) and written back with an
update (PUT) of the ConfigMap as it was read, carrying its `metadata.resourceVersion`: a lost race is a 409,
a ConflictError (the runner retries the effect), never an overwrite of someone's edit. The ConfigMap's other
keys, labels and annotations are the user's and go back as they came. A missing ConfigMap is created
(labelled graylane's). An update, not a patch: graylane's role may update ConfigMaps (its release state is
one) but patch none (infra/k8s/base/rbac.yaml).

Mounted as a volume (not with subPath), the kubelet swaps the file in place of the old one once it sees the
change (its sync period, about a minute by default); flagd's file sync then reloads it. graylane's write is
done within the tick that decided it.
"""

from __future__ import annotations

from typing import Any

from functions.core.effects import FlagPlan
from functions.errors import ConflictError, NotFound, NotReady
from functions.providers.flags.flagd import live_plans, with_plan
from functions.providers.kube import api_error, request

_MANY = "/api/v1/namespaces/{namespace}/configmaps"
_ONE = "/api/v1/namespaces/{namespace}/configmaps/{name}"


class ConfigMapFlags:
    def __init__(self, api_client: Any, namespace: str, name: str, key: str, timeout: float = 5.0) -> None:
        self.api = api_client
        self.namespace, self.name, self.key = namespace, name, key
        self.timeout = timeout

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"

    def set_flag(self, plan: FlagPlan) -> None:
        cm = self._get()
        if cm is None:
            text = with_plan("", plan, self.where)
            self._create(text)
            return
        data = cm.get("data") or {}
        old = data.get(self.key, "")
        new = with_plan(old, plan, self.where)
        if new != old:
            body = {
                **cm,
                "metadata": {k: v for k, v in cm["metadata"].items() if k != "managedFields"},
                "data": {**data, self.key: new},
            }
            cm = self._update(body)
        if plan not in live_plans((cm.get("data") or {}).get(self.key, ""), (plan,)):
            raise NotReady(f"{self.where}: flag {plan.key} does not read back as written")

    def live(self, plans: tuple[FlagPlan, ...]) -> tuple[FlagPlan, ...]:
        cm = self._get()
        return live_plans(((cm or {}).get("data") or {}).get(self.key, ""), plans)

    # -- API calls --------------------------------------------------------------------------------------
    def _get(self) -> dict[str, Any] | None:
        try:
            return self._call("get", "GET", _ONE)
        except NotFound:
            return None

    def _create(self, text: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "graylane", "graylane.dev/role": "flags"},
            },
            "data": {self.key: text},
        }
        try:
            self._call("create", "POST", _MANY, body=body)
        except ConflictError as err:  # created meanwhile: the retried effect edits it
            raise ConflictError(f"{self.where} create: created meanwhile; retrying") from err

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        version = body["metadata"]["resourceVersion"]
        try:
            return self._call("update", "PUT", _ONE, body=body)
        except NotFound as err:
            raise ConflictError(f"{self.where} update: deleted meanwhile; retrying") from err
        except ConflictError as err:
            raise ConflictError(f"{self.where} update: resourceVersion {version} moved on; retrying") from err

    def _call(self, verb: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        params = {"namespace": self.namespace, "name": self.name}
        try:
            return request(self.api, method, path, params, timeout=self.timeout, **kwargs)
        except Exception as err:
            raise api_error(err, "ConfigMap", f"{self.namespace}/{self.name}", f"{verb} flags") from err
