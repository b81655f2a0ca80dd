"""What the Kubernetes routers share: compare-and-swap writes, the route-plan annotation, match rendering.

Every write is a JSON patch whose first operation tests /metadata/resourceVersion, so a write based on a
stale read loses instead of overwriting someone else's change. After each write the answer is checked
for every value written: a field the CRD schema does not know is pruned silently by the apiserver, and
that must fail loudly, not leave traffic where it was.

A route's desired plan is stored in the annotation `graylane.dev/route-plan`; reading routes back takes
the weights from the live object and keeps the annotated rules only if the live matchers are exactly
what those rules render to, so a hand edit of either shows up as drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from functions.core.codec import from_plain
from functions.core.effects import RoutePlan
from functions.core.policy import Match
from functions.core.targeting import BUCKET_HEADER, bucket_regex, cookie_regex, digit_regex
from functions.core.values import value
from functions.errors import ConfigError, ConflictError, NotFound, NotReady, Reject
from functions.providers.kube import api_error, json_object

PLAN_ANNOTATION = "graylane.dev/route-plan"
PROTECTION_ANNOTATION = "graylane.dev/protection"
MANAGED_BY = {"app.kubernetes.io/managed-by": "graylane"}
JSON_PATCH = "application/json-patch+json"
# Returned in a plan's match when the live matchers are not what graylane wrote: never equal to a plan
# decide() builds, so the runner sees drift and re-applies.
DRIFTED = Match("header", name="graylane.dev~live-rules-differ")


@value
class Kind:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


Ops = list[
    dict[str, Any]
]  # JSON patch operations (a module alias: Objects.list shadows `list` inside the class)


class Objects:
    """Reads and compare-and-swap writes of one kind (CustomObjectsApi serves built-in groups too)."""

    def __init__(self, api_client: Any, kind: Kind) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.kind = kind

    def _args(self, namespace: str) -> tuple[str, str, str, str]:
        return self.kind.group, self.kind.version, namespace, self.kind.plural

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return json_object(self.api.get_namespaced_custom_object(*self._args(namespace), name))
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return None
            raise api_error(err, self.kind.kind, f"{namespace}/{name}", "read") from err

    def list(self, namespace: str) -> list[dict[str, Any]]:
        """Every object of this kind in namespace ([] when the cluster does not serve the kind)."""
        try:
            found = json_object(self.api.list_namespaced_custom_object(*self._args(namespace)))
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return []
            raise api_error(err, self.kind.kind, namespace, "list") from err
        return [dict(item) for item in found.get("items") or []]

    def served(self, namespace: str) -> bool:
        """Whether the cluster serves this kind (its CRD is installed)."""
        try:
            self.api.list_namespaced_custom_object(*self._args(namespace), limit=1)
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return False
            raise api_error(err, self.kind.kind, namespace, "list") from err
        return True

    def read(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(namespace, name)
        if obj is None:
            raise NotFound(f"{self.kind.kind} {namespace}/{name} read: not found (reconcile creates it)")
        return obj

    def create(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        annotations: Mapping[str, str] = {},
        labels: Mapping[str, str] = MANAGED_BY,
    ) -> dict[str, Any]:
        """Create the object; one created meanwhile by someone else is read and returned instead."""
        meta = {"name": name, "labels": dict(labels), "annotations": dict(annotations)}
        body = {"apiVersion": self.kind.api_version, "kind": self.kind.kind, "metadata": meta, "spec": spec}
        try:
            created = json_object(self.api.create_namespaced_custom_object(*self._args(namespace), body))
        except Exception as err:
            if getattr(err, "status", None) == 409:
                return self.read(namespace, name)
            raise api_error(err, self.kind.kind, f"{namespace}/{name}", "create") from err
        _check_written(
            created, [{"op": "add", "path": "/spec", "value": spec}], self._what(created, "create")
        )
        return created

    def patch(self, obj: Mapping[str, Any], ops: Ops, verb: str) -> dict[str, Any]:
        """Apply `ops` only if `obj` is still the stored version; check the answer holds every value written."""
        meta = obj["metadata"]
        namespace, name, version = meta["namespace"], meta["name"], meta["resourceVersion"]
        guarded = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *ops]
        try:
            result = json_object(
                self.api.patch_namespaced_custom_object(
                    *self._args(namespace), name, guarded, _content_type=JSON_PATCH
                )
            )
        except Exception as err:
            raise self._patch_error(err, namespace, name, version, verb) from err
        _check_written(result, ops, self._what(obj, verb), obj)
        return result

    def write(self, obj: Mapping[str, Any], ops: Ops, verb: str) -> None:
        """Patch obj with ops when there are any: an object that already holds what is wanted is not written."""
        if ops:
            self.patch(obj, ops, verb)

    def _patch_error(self, err: Exception, namespace: str, name: str, version: str, verb: str) -> Exception:
        # A failed `test` and a bad path both answer 422 with the same message: the stored version tells them apart.
        if getattr(err, "status", None) == 422:
            now = self.get(namespace, name)
            if now is not None and now["metadata"]["resourceVersion"] != version:
                lost = ConflictError(
                    f"{self.kind.kind} {namespace}/{name} {verb}: resourceVersion {version} "
                    f"moved on to {now['metadata']['resourceVersion']}"
                )
                lost.__cause__ = err
                return lost
        return api_error(err, self.kind.kind, f"{namespace}/{name}", verb)

    def delete(self, obj: Mapping[str, Any], verb: str = "delete") -> None:
        """Delete the object only if it is still the version read (a 404 means it is already gone)."""
        meta = obj["metadata"]
        from kubernetes import client

        precondition = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=meta["resourceVersion"])
        )
        try:
            self.api.delete_namespaced_custom_object(
                *self._args(meta["namespace"]), meta["name"], body=precondition
            )
        except Exception as err:
            if getattr(err, "status", None) != 404:
                raise api_error(err, self.kind.kind, f"{meta['namespace']}/{meta['name']}", verb) from err

    def _what(self, obj: Mapping[str, Any], verb: str) -> str:
        meta = obj.get("metadata", {})
        return f"{self.kind.kind} {meta.get('namespace', '')}/{meta.get('name', '')} {verb}"


def _pointer_get(doc: Any, pointer: str) -> tuple[bool, Any]:
    node = doc
    for raw in pointer.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            return False, None
    return True, node


def holds(actual: Any, expected: Any) -> bool:
    """Whether `actual` contains everything of `expected` (server defaults may add keys, never drop them)."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and holds(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(holds, actual, expected))
    return bool(actual == expected)


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """`doc` with the JSON patch `ops` applied (add, replace, remove; test is skipped), as the server does."""
    import copy

    doc = copy.deepcopy(doc)
    for op in ops:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        if op["op"] == "test" or not keys:
            continue
        node = doc
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last = keys[-1]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "remove":
                del node[index]
            elif op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            else:
                node[index] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[last]
        else:
            node[last] = copy.deepcopy(op["value"])
    return doc


def _check_written(result: Any, ops: list[dict[str, Any]], what: str, before: Any = None) -> None:
    spec_ops = [op for op in ops if op["path"].startswith("/spec/")]
    try:
        expected = apply_patch(before, spec_ops) if before is not None and spec_ops else None
    except (KeyError, IndexError, ValueError, TypeError):
        expected = None
    if expected is not None:
        # elements are inserted and removed, so later paths move: compare the whole spec the patch leads to
        if not holds(result.get("spec"), expected.get("spec")):
            raise Reject(
                f"{what}: the stored spec is not what was written (a field the schema does not know is "
                f"pruned); wrote {json.dumps(expected.get('spec'))[:300]}, stored "
                f"{json.dumps(result.get('spec'))[:300]}"
            )
        ops = [op for op in ops if op not in spec_ops]
    for op in ops:
        found, value = _pointer_get(result, op["path"])
        if op["op"] in ("add", "replace") and not (found and holds(value, op["value"])):
            raise Reject(
                f"{what}: {op['path']} did not keep the value written (a field the schema does not "
                f"know is pruned); wrote {json.dumps(op['value'])[:200]}, stored "
                f"{json.dumps(value)[:200] if found else 'nothing'}"
            )
        if (
            op["op"] == "remove" and found and not _in_list(result, op["path"])
        ):  # the next entry takes its index
            raise Reject(f"{what}: {op['path']} is still present after removing it")


def _in_list(doc: Any, path: str) -> bool:
    found, parent = _pointer_get(doc, path.rsplit("/", 1)[0])
    return found and isinstance(parent, list)


def pointer(*keys: str | int) -> str:
    return "".join("/" + str(k).replace("~", "~0").replace("/", "~1") for k in keys)


def annotation_ops(obj: Mapping[str, Any], wanted: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """JSON patch operations setting (or, for None, removing) annotations of obj."""
    current = obj.get("metadata", {}).get("annotations")
    if current is None:
        added = {k: v for k, v in wanted.items() if v is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": added}] if added else []
    ops: list[dict[str, Any]] = []
    for key, text in wanted.items():
        path = pointer("metadata", "annotations", key)
        if text is None:
            if key in current:
                ops.append({"op": "remove", "path": path})
        elif current.get(key) != text:
            ops.append({"op": "add", "path": path, "value": text})
    return ops


def encode_plan(plan: RoutePlan) -> str:
    return json.dumps(plan.to_dict(), sort_keys=True, separators=(",", ":"))


def plan_note(plan: RoutePlan) -> dict[str, str]:
    """The route-plan annotation recording plan (see `decode_plan` and `live_plan`)."""
    return {PLAN_ANNOTATION: encode_plan(plan)}


def backend_weight_ops(
    entries: list[Any],
    base: str,
    plan: RoutePlan,
    *,
    is_stable: Callable[[Any], bool],
    is_canary: Callable[[Any], bool],
    canary_of: Callable[[Mapping[str, Any]], dict[str, Any]],
    kept: Mapping[str, Any] | None,
    what: str,
    drop: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """JSON patch operations putting plan's weights on a backend list the user shares (a route's services,
    destinations or backendRefs), touching only the stable's weight and the canary's entry, one element each.

    The canary's entry is added while it gets traffic: the user's own, kept aside (`kept`), or `canary_of` the
    stable's entry (its port, namespace, passHostHeader... with the canary's name or subset); at weight 0 it is
    removed and returned without its weight, for the caller to keep aside, unless `drop` is false (it stays
    listed at weight 0). A lone stable without a weight is left without one (it takes everything), unless a fresh baseline
    takes a share (functions/core/baseline.py). `what` names
    the list for the refusal of a stable listed other than once ("<where>: <base> lists Service web")."""
    stable = [i for i, e in enumerate(entries) if is_stable(e)]
    if len(stable) != 1:
        raise ConfigError(f"{what} {len(stable)} times; expected once")
    i_s, canary = stable[0], [i for i, e in enumerate(entries) if is_canary(e)]
    ops: list[dict[str, Any]] = []
    alone = drop and plan.canary == 0
    if entries[i_s].get("weight") != plan.stable and not (
        alone and not plan.baseline and "weight" not in entries[i_s]
    ):
        ops.append({"op": "add", "path": f"{base}/{i_s}/weight", "value": plan.stable})
    removed = None
    if not alone and canary:
        if entries[canary[0]].get("weight") != plan.canary:
            ops.append({"op": "add", "path": f"{base}/{canary[0]}/weight", "value": plan.canary})
    elif not alone:
        entry = dict(kept) if kept else canary_of(entries[i_s])
        ops.append({"op": "add", "path": f"{base}/-", "value": {**entry, "weight": plan.canary}})
    elif canary:
        removed = {k: v for k, v in entries[canary[0]].items() if k != "weight"}
        ops.append({"op": "remove", "path": f"{base}/{canary[0]}"})
    return ops, removed


def decode_plan(obj: Mapping[str, Any] | None) -> RoutePlan:
    """The plan annotated on obj; a missing or unreadable annotation means no rules."""
    text = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(PLAN_ANNOTATION)
    try:
        plan = from_plain(RoutePlan, json.loads(text)) if text else RoutePlan()
    except (TypeError, ValueError, KeyError):
        return RoutePlan()
    return plan if isinstance(plan, RoutePlan) else RoutePlan()


def live_plan(
    annotated: RoutePlan,
    stable: int,
    canary: int,
    live_rules: Any,
    render_rules: Callable[[RoutePlan], Any],
    what: str,
    baseline: int = 0,
) -> RoutePlan:
    """The plan the live object implements: live weights, plus the annotated rules if they are what is live.
    `baseline`: the fresh baseline's live weight (functions/core/baseline.py)."""
    total = stable + canary + baseline
    if stable < 0 or canary < 0 or baseline < 0 or total <= 0:
        raise NotReady(f"{what}: live weights {stable}/{canary} do not route any traffic")
    share = round(100 * canary / total)
    base = min(round(100 * baseline / total), 100 - share)
    plan = RoutePlan(
        stable=100 - share - base, canary=share, match=annotated.match, salt=annotated.salt, baseline=base
    )
    if not holds(live_rules, render_rules(plan)):  # fields the server defaults in are not drift
        return replace(plan, match=(DRIFTED,), salt="")
    return plan


def baseline_ops(
    entries: list[Any],
    base: str,
    plan: RoutePlan,
    name: str,
    is_stable: Callable[[Any], bool],
    is_baseline: Callable[[Any], bool],
) -> list[dict[str, Any]]:
    """The fresh baseline's entry on a weighted backend list (functions/core/baseline.py), given the list as the
    stable's and canary's operations leave it: a copy of the stable's entry naming the baseline (`name`) at
    plan.baseline while it gets traffic, removed at 0 (it is graylane's own Service: nothing of the user's is
    kept aside). Traefik's route services and TraefikService, Gateway API's backendRefs."""
    found = [i for i, e in enumerate(entries) if is_baseline(e)]
    stable = next((e for e in entries if is_stable(e)), None)
    if plan.baseline > 0 and found:
        i = found[0]
        if entries[i].get("weight") == plan.baseline:
            return []
        return [{"op": "add", "path": f"{base}/{i}/weight", "value": plan.baseline}]
    if plan.baseline > 0 and stable is not None:
        entry = {**{k: v for k, v in stable.items() if k != "weight"}, "name": name, "weight": plan.baseline}
        return [{"op": "add", "path": f"{base}/-", "value": entry}]
    return [{"op": "remove", "path": f"{base}/{i}"} for i in sorted(found, reverse=True)]


def relative(ops: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """`ops` on paths under `base`, as paths of the list at `base` itself (for apply_patch on that list)."""
    return [{**op, "path": op["path"][len(base) :]} for op in ops if op["path"].startswith(base)]


def feature_of(match: Match) -> str:
    if match.kind == "header":
        return "header-regex" if match.regex else "header"
    return match.kind


def check_plan(
    plan: RoutePlan,
    provider: str,
    capabilities: frozenset[str],
    what: str,
    unsupported: Mapping[str, str] = {},
) -> None:
    """Refuse a plan the provider cannot express (validation should have caught it already)."""
    if plan.mirror and "mirror" not in capabilities:
        raise ConfigError(
            f"{what}: traffic mirroring ({plan.mirror}% to the canary) is not supported by router {provider}"
        )
    for m in plan.match:
        feature = feature_of(m)
        why = unsupported.get(feature) or ("" if feature in capabilities else f"router {provider}")
        if why:
            raise ConfigError(
                f"{what}: {feature} matching ({m.name or ','.join(m.cidrs)}) is not supported by {why}"
            )


def header_rule(match: Match) -> tuple[str, str, bool]:
    """(header name, value or regular expression, is_regex) carrying one match rule to the proxy."""
    if match.kind == "header":
        return (match.name, match.regex, True) if match.regex else (match.name, match.value, False)
    if match.kind == "cookie":
        return "cookie", cookie_regex(match.name, match.value, match.regex), True
    if match.kind == "user-id-digit":
        return match.name, digit_regex(match.digits), True
    if match.kind == "user-hash":
        return BUCKET_HEADER, bucket_regex(match.percent), True
    raise ConfigError(f"a {match.kind} rule cannot be carried by a header")


def re2_problem(pattern: str) -> str:
    """Why RE2 (the syntax of Envoy's, Istio's and Go's regular expressions) refuses a pattern Python's `re`
    accepts, or "" when it does not: the policy's regexes are checked by `re`, the proxy runs RE2."""
    from re import _constants as c  # type: ignore[attr-defined]  # private, so without stubs
    from re import _parser  # type: ignore[attr-defined]

    if len(pattern) > 1024:  # Istio's approximation of Envoy's re2.max_program_size
        return f"{len(pattern)} characters, more than the 1024 Istio allows"
    for escape in re.finditer(r"\\(.)", pattern, re.S):  # pairs, so an escaped backslash is skipped whole
        if escape.group(1) in "uUNZ":
            return f"the escape \\{escape.group(1)} is Python's" + (
                " (RE2 writes \\z)" if escape.group(1) == "Z" else ""
            )
    try:
        tree = _parser.parse(pattern)
    except re.error as err:
        return str(err)
    allowed = re.I | re.M | re.S | re.U  # (?i) (?m) (?s); re.U is implied for str patterns
    if tree.state.flags & ~allowed:
        return "an inline flag RE2 lacks (only i, m and s)"
    unsupported = {
        c.ASSERT: "a lookahead or lookbehind",
        c.ASSERT_NOT: "a negative lookahead or lookbehind",
        c.GROUPREF: "a backreference",
        c.GROUPREF_EXISTS: "a conditional group",
        c.ATOMIC_GROUP: "an atomic group",
        c.POSSESSIVE_REPEAT: "a possessive quantifier",
    }

    def walk(items: Any) -> str:
        for op, av in items:
            if op in unsupported:
                return f"{unsupported[op]} (RE2 has none)"
            if op in (c.MAX_REPEAT, c.MIN_REPEAT):
                low, high, sub = av
                if low > 1000 or (high != c.MAXREPEAT and high > 1000):
                    return "a repeat count above RE2's 1000"
                found = walk(sub)
            elif op is c.SUBPATTERN:
                _, add, remove, sub = av
                found = (
                    "an inline flag RE2 lacks (only i, m and s)" if (add | remove) & ~allowed else walk(sub)
                )
            elif op is c.BRANCH:
                found = next((why for why in map(walk, av[1]) if why), "")
            else:
                found = ""
            if found:
                return found
        return ""

    return walk(tree)


def option(
    options: Mapping[str, Any], key: str, default: Any, kind: type | tuple[type, ...], where: str
) -> Any:
    """Router option `key` (or default), type-checked: a wrong type is a ConfigError naming the key."""
    value = options.get(key, default)
    expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
    if value is None:
        raise ConfigError(f"{where}: router option {key} is required; expected a {expected}")
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind) or value == "":
        raise ConfigError(f"{where}: router option {key} is {value!r}; expected a non-empty {expected}")
    return value


def choice_option(options: Mapping[str, Any], key: str, choices: Mapping[str, Any], where: str) -> str:
    """Router option `key`, one of `choices`' keys (the first is the default): another is a ConfigError naming it."""
    value = options.get(key, next(iter(choices)))
    if value not in choices:
        raise ConfigError(f"{where}: router option {key} is {value!r}; expected one of {', '.join(choices)}")
    return str(value)
