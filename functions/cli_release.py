"""`graylane` release commands: status, list, history, approve, reject, weight, promote, pause, resume,
abort, rollback. Registered into `functions.cli.COMMANDS`; heavy imports happen when a command runs.

With `--server URL --token TOKEN` (or GRAYLANE_SERVER / GRAYLANE_TOKEN) they call the approval API;
otherwise they act on the state store directly (`--store URL`, `--context NAME` for a cluster's
ConfigMaps) through the runner, as `$USER` via cli: whoever can write the store needs no approval.

A command is for one release: the CLI reads the app's current release, prints it (on stderr) and sends its
id and target version with the command, so a release that changes in between refuses it; `--release ID`
pins another one (refused unless it is the current release).

Exit codes: 0 done, 1 refused / ignored / not found (the reason is printed), 2 usage, 3 unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from functions.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, command

if TYPE_CHECKING:
    from functions.providers.kube import ApiClient
    from functions.runner import Runner

EXIT_UNREACHABLE = 3
SPINNER = "|/-\\"


class Unreachable(Exception):
    """The server or the store could not be reached."""


# --- arguments -------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, app: bool = True) -> None:
    if app:
        p.add_argument("app", metavar="NAMESPACE/APP", help="the app, e.g. pro/flask")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help="output format")
    p.add_argument(
        "--server",
        default=os.environ.get("GRAYLANE_SERVER", ""),
        help="approval API base URL (env GRAYLANE_SERVER); without it the local store is used",
    )
    p.add_argument(
        "--token", default=os.environ.get("GRAYLANE_TOKEN", ""), help="API token (env GRAYLANE_TOKEN)"
    )
    p.add_argument(
        "--store", default="", help="state store URL (default: GRAYLANE_STORE or sqlite:///graylane.db)"
    )
    p.add_argument(
        "--policies", default="", help="policy directory (default: GRAYLANE_POLICIES or infra/examples)"
    )
    p.add_argument(
        "--context", default="", help="kubeconfig context: use that cluster's ConfigMap store and policies"
    )
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the server (and for --wait)"
    )


def _reason(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default="", help="recorded in the history and the notices")
    p.add_argument(
        "--release",
        default="",
        metavar="ID",
        help="the release the command is for (default: the current one, printed before it is sent)",
    )


def _gate_args(p: argparse.ArgumentParser, wait: bool) -> None:
    _common(p)
    p.add_argument("--gate", default="", help="the gate (default: the one the release waits at)")
    _reason(p)
    if wait:
        p.add_argument("--weight", type=int, help="approve: the gate's weight parameter (0..100)")
        p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a gate parameter")
        p.add_argument("--wait", action="store_true", help="show progress until the release leaves the gate")


def _with(*extra: Callable[[argparse.ArgumentParser], object]) -> Callable[[argparse.ArgumentParser], None]:
    def arguments(p: argparse.ArgumentParser) -> None:
        _common(p)
        for add in extra:
            add(p)

    return arguments


# --- backends --------------------------------------------------------------------------------------


class HttpBackend:
    def __init__(self, server: str, token: str, timeout: float) -> None:
        self.base, self.token, self.timeout = server.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) only)
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            raw = err.read() if err.fp is not None else b""
            err.close()
            try:
                return err.code, json.loads(raw or b"{}")
            except ValueError:
                return err.code, {"error": raw.decode(errors="replace")[:300]}
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise Unreachable(f"graylane server {self.base}: {getattr(err, 'reason', err)}") from err

    def execute(self, app: str, action: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if action in ("status", "history"):
            path = f"/api/v1/apps/{app}" + (
                "/history?limit=" + str(fields.get("limit", 20)) if action == "history" else ""
            )
            return self.call("GET", path)
        return self.call("POST", f"/api/v1/apps/{app}/commands", {"action": action, **fields})

    def rows(self) -> tuple[int, dict[str, Any]]:
        return self.call("GET", "/api/v1/apps")


class LocalBackend:
    """The store and policies of this machine (or of `--context`'s cluster), through the runner."""

    def __init__(self, args: argparse.Namespace) -> None:
        from functions.settings import Settings

        base = Settings.from_env()
        store, policies = args.store or base.store, args.policies or base.policies
        if args.context:
            store = store if store.startswith("configmap://") else f"configmap://?context={args.context}"
            if "context=" not in store:
                store += ("&" if "?" in store else "?") + f"context={args.context}"
            policies = "configmap://"
        self.settings = Settings(store=store, policies=policies, providers=base.providers, sink=base.sink)
        self.context = args.context
        try:
            self.runner = self._runner()
        except Exception as err:  # an unreadable kubeconfig, a locked database: nothing reachable
            raise Unreachable(f"state store {store}: {err}") from err
        from functions.approvals import Approvals
        from functions.audit import StoreAuditLog

        self.approvals = Approvals(
            self.runner.store, self.runner.policies, None, StoreAuditLog(self.runner.store)
        )

    def _runner(self) -> Runner:
        from functions.runtime import build_runner

        context = self.context
        client_for = None
        if context:  # routes and workloads on --context's cluster (a wave's own cluster keeps its context)
            from functions.providers.kube import client_from

            def client_for(cluster: str) -> ApiClient:
                return client_from(context=cluster or context)

        runner = build_runner(self.settings, client_for)
        if self.context:
            from functions.providers.kube import client_from
            from functions.providers.policysource import ConfigMapPolicies

            runner.policies = ConfigMapPolicies(client_from(context=self.context))
        return runner

    def execute(self, app: str, action: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        from functions.approvals import CommandRequest
        from functions.chatops.authz import Requester
        from functions.errors import GraylaneError

        who = Requester(user=os.environ.get("USER") or os.environ.get("USERNAME") or "cli", via="cli")
        try:
            if action in ("status", "history"):
                result = self.approvals.execute(
                    CommandRequest(app=app, action=action, requester=who, limit=fields.get("limit", 20))
                )
                return result.status, {**result.to_json(), "lines": list(result.lines)}
            from functions.cli_local import run_command

            return run_command(self.runner, self.approvals, app, action, who, fields)
        except GraylaneError as err:
            if type(err).__name__ in ("ProviderUnavailable", "Retry"):
                raise Unreachable(str(err)) from err
            return 400, {"error": str(err)}

    def rows(self) -> tuple[int, dict[str, Any]]:
        from functions import present
        from functions.errors import GraylaneError

        try:
            states = self.approvals.apps()
        except GraylaneError as err:
            raise Unreachable(f"state store {self.settings.store}: {err}") from err
        now = self.approvals.clock()
        return 200, {"items": [present.row(s, self.approvals.policy(s.app), now) for s in states]}


def _backend(args: argparse.Namespace) -> HttpBackend | LocalBackend:
    if args.server:
        if not args.token:
            raise ValueError("--server needs --token (or GRAYLANE_TOKEN)")
        return HttpBackend(args.server, args.token, args.timeout)
    return LocalBackend(args)


# --- output ----------------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(value, indent=2, sort_keys=True))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump(value, sort_keys=True, allow_unicode=True), end="")
    elif text:
        print(text)


def _exit_for(status: int) -> int:
    if status in (200, 202):
        return EXIT_OK
    return EXIT_UNREACHABLE if status >= 500 else EXIT_PROBLEMS


def _run(args: argparse.Namespace, work: Callable[[HttpBackend | LocalBackend], int]) -> int:
    try:
        return work(_backend(args))
    except ValueError as err:
        print(f"graylane {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as err:
        print(f"graylane {args.command}: unreachable: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE


# --- commands --------------------------------------------------------------------------------------


@command(
    "list",
    "list the apps and their releases (NAMESPACE APP RELEASE PHASE STAGE WEIGHT VERDICT AGE)",
    lambda p: _common(p, app=False),
)
def list_apps(args: argparse.Namespace) -> int:
    def work(backend: HttpBackend | LocalBackend) -> int:
        from functions import present

        status, body = backend.rows()
        if status != 200:
            print(f"graylane list: {body.get('error', status)}", file=sys.stderr)
            return _exit_for(status)
        items = body.get("items", [])
        if not items and args.output == "table":
            print("No releases found.", file=sys.stderr)
            return EXIT_OK
        _emit(args, items, present.table(items, present.LIST_COLUMNS))
        return EXIT_OK

    return _run(args, work)


def _read(args: argparse.Namespace, action: str, fields: dict[str, Any]) -> int:
    def work(backend: HttpBackend | LocalBackend) -> int:
        status, body = backend.execute(args.app, action, fields)
        if status != 200:
            print(
                f"graylane {action} {args.app}: {body.get('error') or body.get('message') or status}",
                file=sys.stderr,
            )
            return _exit_for(status)
        data = body.get("data")
        lines = body.get("lines") or _lines(action, data)
        _emit(args, data, "\n".join(lines) if lines else f"{args.app} has no history yet")
        return EXIT_OK

    return _run(args, work)


def _lines(action: str, data: Any) -> list[str]:
    """Text for a server answer (the server sends data; the lines are rebuilt here)."""
    if action == "history":
        return [
            f"{h['at'][:19].replace('T', ' ')} {h.get('release') or '-'} {h['action']}"
            + (f": {h['reason']}" if h.get("reason") else "")
            + (
                f" by {h['by']['user']} via {h['by']['via']}"
                if h.get("by") and h["by"]["via"] != "system"
                else ""
            )
            for h in data or []
        ]
    from functions import present

    row = (data or {}).get("row") or {}
    return present.table([row], present.LIST_COLUMNS).splitlines() if row else []


def _status_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "-w", "--watch", action="store_true", help="follow the release live until it ends (Ctrl-C stops)"
    )
    p.add_argument(
        "--interval", type=float, default=2.0, help="with --watch: seconds between looks (default 2)"
    )


@command(
    "status", "show an app's release: phase, stage, gate, weight, latest verdict (-w: live)", _status_args
)
def status(args: argparse.Namespace) -> int:
    if args.watch:
        if not 0.1 <= args.interval <= 3600:
            print("graylane status: --interval must be 0.1..3600 seconds", file=sys.stderr)
            return EXIT_USAGE
        from functions.cli_watch import watch

        return _run(args, lambda backend: watch(args, backend))
    return _read(args, "status", {})


@command(
    "history",
    "show an app's history: who did what, when, from where",
    _with(lambda p: p.add_argument("--limit", type=int, default=20, help="entries (1..200)")),
)
def history(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 200:
        print("graylane history: --limit must be 1..200", file=sys.stderr)
        return EXIT_USAGE
    return _read(args, "history", {"limit": args.limit})


def _mutate(args: argparse.Namespace, action: str, fields: dict[str, Any], wait_gate: bool = False) -> int:
    fields = {k: v for k, v in fields.items() if v not in (None, "", {})}

    def work(backend: HttpBackend | LocalBackend) -> int:
        code, before = backend.execute(args.app, "status", {})
        release = ((before.get("data") or {}).get("release") or {}) if code == 200 else {}
        gate_before = (fields.get("gate") or release.get("gate", "")) if wait_gate else ""
        _pin(args, action, fields, release)
        status, body = backend.execute(args.app, action, fields)
        message = body.get("message") or body.get("error") or str(status)
        if status not in (200, 202):
            print(f"graylane {action} {args.app}: {message}", file=sys.stderr)
            return _exit_for(status)
        _emit(args, body, message)
        if wait_gate and getattr(args, "wait", False):
            return _wait(args, backend, gate_before)
        return EXIT_OK

    return _run(args, work)


def _pin(args: argparse.Namespace, action: str, fields: dict[str, Any], current: dict[str, Any]) -> None:
    """Name the release the command is for in `fields` (the current one unless --release says otherwise) and
    say which on stderr, before anything is sent."""
    pinned = getattr(args, "release", "") or ""
    rid = pinned or current.get("id", "")
    if not rid:
        return  # the app has no release yet: there is nothing to name
    fields["release"] = rid
    if rid == current.get("id"):
        if action != "rollback":  # a rollback's version is where to go, not the release's target
            fields["version"] = current.get("version", "")
        where = f"{current.get('phase', '')}" + (f" at gate {current['gate']}" if current.get("gate") else "")
        print(
            f"graylane {action} {args.app}: release {rid} ({current.get('version', '')}), {where}",
            file=sys.stderr,
        )
    else:
        shown = f"{current.get('id')} ({current.get('version', '')})" if current.get("id") else "none"
        print(
            f"graylane {action} {args.app}: release {rid} (pinned; the current release is {shown})",
            file=sys.stderr,
        )


def _wait(args: argparse.Namespace, backend: HttpBackend | LocalBackend, gate: str) -> int:
    """Poll the status until the release no longer waits at `gate` (or ends); a spinner on stderr."""
    deadline = time.monotonic() + args.timeout
    tick = 0
    while True:
        code, body = backend.execute(args.app, "status", {})
        release = ((body.get("data") or {}).get("release") or {}) if code == 200 else {}
        left = release and (release.get("phase") != "waiting" or release.get("gate") != gate)
        if left or (code == 200 and not release):
            print(
                f"\r{args.app}: {release.get('phase', 'no release')} at {release.get('stage', '-')}"
                + " " * 20,
                file=sys.stderr,
            )
            return EXIT_OK
        if time.monotonic() >= deadline:
            print(f"\r{args.app}: still waiting at gate {gate} after {args.timeout:.0f}s", file=sys.stderr)
            return EXIT_PROBLEMS
        print(
            f"\r{SPINNER[tick % 4]} {args.app}: waiting at gate {gate or '?'}",
            end="",
            file=sys.stderr,
            flush=True,
        )
        tick += 1
        time.sleep(0.5)


def _params(args: argparse.Namespace) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.lstrip("-").isdigit():
            raise SystemExit(f"graylane {args.command}: --param {item!r} must be NAME=INTEGER")
        out[name] = int(value)
    return out


@command("approve", "approve a gate (the one being waited at, or --gate NAME)", lambda p: _gate_args(p, True))
def approve(args: argparse.Namespace) -> int:
    try:
        params = _params(args)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    return _mutate(
        args,
        "approve",
        {"gate": args.gate, "weight": args.weight, "params": params, "reason": args.reason},
        wait_gate=True,
    )


@command(
    "reject",
    "reject a gate: the release is aborted and traffic returns to stable",
    lambda p: _gate_args(p, False),
)
def reject(args: argparse.Namespace) -> int:
    return _mutate(args, "reject", {"gate": args.gate, "reason": args.reason})


@command(
    "weight",
    "set the canary weight (0..100)",
    _with(lambda p: p.add_argument("weight", type=int, metavar="PERCENT"), _reason),
)
def weight(args: argparse.Namespace) -> int:
    if not 0 <= args.weight <= 100:
        print("graylane weight: PERCENT must be 0..100", file=sys.stderr)
        return EXIT_USAGE
    return _mutate(args, "weight", {"weight": args.weight, "reason": args.reason})


@command(
    "promote",
    "promote the release now (passes the gates before the promote stage)",
    _with(_reason, lambda p: p.add_argument("--wait", action="store_true", help="show progress")),
)
def promote(args: argparse.Namespace) -> int:
    return _mutate(args, "promote", {"reason": args.reason}, wait_gate=True)


def _simple(action: str, help: str) -> None:
    def run(args: argparse.Namespace) -> int:
        return _mutate(args, action, {"reason": args.reason})

    command(action, help, _with(_reason))(run)


_simple("pause", "pause the release (timers stop; traffic stays as it is)")
_simple("resume", "resume a paused release, or move on from an indefinite step")
_simple("abort", "abort the release: traffic returns to stable, the canary scales down")


@command(
    "rollback",
    "roll back the active release, or return to VERSION (default: the previous stable)",
    _with(lambda p: p.add_argument("version", nargs="?", default="", metavar="VERSION"), _reason),
)
def rollback(args: argparse.Namespace) -> int:
    return _mutate(args, "rollback", {"version": args.version, "reason": args.reason})
