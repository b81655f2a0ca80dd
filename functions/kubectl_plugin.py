"""`kubectl graylane ...`: the graylane CLI as a kubectl plugin (the `kubectl-graylane` console script on PATH).

    kubectl graylane status web                  # the app web in the current context's namespace
    kubectl graylane approve web -n prod --gate promote
    kubectl graylane list -A -o yaml             # every namespace
    kubectl graylane history team/web --context staging --kubeconfig ~/.kube/staging

The commands are the CLI's own (functions.cli.COMMANDS: the same arguments, output and exit codes, `-o
json|yaml`), run on the cluster's ConfigMap store (state `graylane-<app>`, policies labelled
graylane.dev/role=policy) exactly as `graylane ... --context` runs them. What the plugin adds is kubectl's view
of where it is:

- `--kubeconfig FILE`, else `KUBECONFIG` (a colon-separated list, merged as kubectl does), else ~/.kube/config;
  inside a pod without either, the pod's service account;
- `--context NAME`, else the kubeconfig's current-context;
- `-n/--namespace NS`, else the context's namespace, else `default` (in a pod: the pod's namespace). An app
  written `ns/app` names its namespace itself; `-A/--all-namespaces` makes `list` look everywhere.

kubectl passes every argument after the plugin's name (it refuses global flags before it), so these flags may
stand anywhere on the line. Commands act with the kubeconfig's credentials, like kubectl: whoever may write the
app's ConfigMap needs no approval (the decision is audited and recorded in the release history, via `cli`), and
the release's effects (routes, Deployments) are applied with the same credentials (GRAYLANE_PROVIDERS defaults
to `kubernetes` here).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from functions.cli import COMMANDS, EXIT_USAGE
from functions.core.values import value
from functions.errors import ConfigError

PROG = "kubectl graylane"
# the CLI's commands that work on a cluster's releases (serve, demo and report are not for a kubectl plugin)
PLUGIN_COMMANDS = (
    "list",
    "status",
    "history",
    "approve",
    "reject",
    "weight",
    "promote",
    "pause",
    "resume",
    "abort",
    "rollback",
    "validate",
    "import",
)
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@value
class KubeFlags:
    kubeconfig: str = ""
    context: str = ""
    namespace: str = ""
    all_namespaces: bool = False


@value
class Where:
    context: str  # '' in a pod (the service account)
    namespace: str
    kubeconfig: str = ""


class UsageError(Exception):
    pass


_TAKES_VALUE = {
    "--kubeconfig": "kubeconfig",
    "--context": "context",
    "--namespace": "namespace",
    "-n": "namespace",
}


def split_flags(argv: Sequence[str]) -> tuple[KubeFlags, list[str]]:
    """kubectl's flags (anywhere on the line, `--flag value` or `--flag=value`, `-nNS`) and the rest, in order."""
    found: dict[str, str] = {}
    every = False
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            rest += items[i:]
            break
        name, eq, inline = arg.partition("=")
        if name in _TAKES_VALUE:
            if eq:
                given = inline
            elif i + 1 < len(items):
                i += 1
                given = items[i]
            else:
                raise UsageError(f"flag needs an argument: {name}")
            if not given:
                raise UsageError(f"flag {name} needs a non-empty value")
            found[_TAKES_VALUE[name]] = given
        elif arg.startswith("-n") and not arg.startswith("--") and len(arg) > 2:
            found["namespace"] = arg[2:]
        elif arg in ("-A", "--all-namespaces"):
            every = True
        else:
            rest.append(arg)
        i += 1
    return KubeFlags(all_namespaces=every, **found), rest


def where(flags: KubeFlags, env: Mapping[str, str] | None = None) -> Where:
    """The context and namespace kubectl would use with these flags (reads the kubeconfig, no API call)."""
    env = os.environ if env is None else env
    kubeconfig = flags.kubeconfig or env.get("KUBECONFIG", "")
    default = Path("~/.kube/config").expanduser()
    in_pod = (
        not kubeconfig and not flags.context and not default.exists() and "KUBERNETES_SERVICE_HOST" in env
    )
    if in_pod:
        return Where(context="", namespace=flags.namespace or _pod_namespace())
    chosen = _context(flags.context, kubeconfig, default)
    namespace = flags.namespace or (chosen.get("context") or {}).get("namespace") or "default"
    return Where(context=str(chosen["name"]), namespace=namespace, kubeconfig=kubeconfig)


def _pod_namespace() -> str:
    """In a pod without a kubeconfig: the namespace of its service account."""
    try:
        return Path(SA_NAMESPACE).read_text().strip() or "default"
    except OSError:
        return "default"


def _context(name: str, kubeconfig: str, default: Path) -> dict[str, Any]:
    """The kubeconfig's context `name`, or its current one."""
    from functions.providers.kube import kubeconfig_contexts

    try:
        contexts, active = kubeconfig_contexts(kubeconfig or None)
    except ConfigError as err:
        raise UsageError(f"cannot read the kubeconfig {kubeconfig or default}: {err}") from err
    if name:
        chosen = next((c for c in contexts if c.get("name") == name), None)
        if chosen is None:
            raise UsageError(f'context "{name}" does not exist in {kubeconfig or default}')
        return chosen
    if not active:
        raise UsageError(f"the kubeconfig {kubeconfig or default} has no current-context; pass --context")
    return active


def qualify(app: str, place: Where, namespace_given: bool) -> str:
    """`web` -> `<namespace>/web`; `team/web` stays (an explicit -n naming another namespace is a mistake)."""
    if "/" in app:
        ns = app.split("/", 1)[0]
        if namespace_given and ns != place.namespace:
            raise UsageError(f"{app} names namespace {ns}, but --namespace says {place.namespace}")
        return app
    return f"{place.namespace}/{app}"


def store_url(place: Where, every: bool) -> str:
    query = {}
    if place.context:
        query["context"] = place.context
    if not every:
        query["namespaces"] = place.namespace
    return "configmap://" + (f"?{urlencode(query)}" if query else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="graylane releases on the cluster of the current kubeconfig context.",
        epilog="kubectl's flags, anywhere on the line: --kubeconfig FILE, --context NAME, -n/--namespace NS, "
        "-A/--all-namespaces (list).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in PLUGIN_COMMANDS:
        cmd = COMMANDS[name]
        cmd.arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        flags, rest = split_flags(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if flags.kubeconfig:  # before kubernetes is imported: its default path is read then
        os.environ["KUBECONFIG"] = flags.kubeconfig
    parser = build_parser()
    try:
        args = parser.parse_args(rest)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command in ("validate", "import"):
        if getattr(args, "live", False) and flags.context:  # validate --live reads the plugin's cluster
            args.context = flags.context
        return COMMANDS[args.command].run(
            args
        )  # files only (validate --live: reads the cluster, never writes)
    try:
        if flags.all_namespaces and args.command != "list":
            raise UsageError("-A/--all-namespaces goes with list only")
        if getattr(args, "server", "") and "--server" in rest:
            raise UsageError(
                "--server: the plugin works on the cluster's ConfigMap store; use `graylane --server`"
            )
        place = where(flags)
        if hasattr(args, "app"):
            args.app = qualify(args.app, place, bool(flags.namespace))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args.server, args.token = "", ""  # always the cluster's store, never GRAYLANE_SERVER
    args.context = place.context
    args.store = store_url(place, flags.all_namespaces)
    args.policies = "configmap://"
    os.environ.setdefault(
        "GRAYLANE_PROVIDERS", "kubernetes"
    )  # effects land on this cluster, like kubectl's edits
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
