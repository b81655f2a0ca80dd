"""`graylane` command line. Subcommands are entries of COMMANDS: a name, a help line, a function that
adds its arguments and a function that runs it and returns the exit code.

Exit codes: 0 success, 1 the command ran and found problems (or could not read its input, or was
refused), 2 usage, 3 the server or store was unreachable.
Command bodies import what they need when they run, so `graylane --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from functions.core.values import value

if TYPE_CHECKING:
    from functions.core.policy import Policy

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@value
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as subcommand `name`; the function itself is returned unchanged."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


# --- validate --------------------------------------------------------------------------------------


def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="policy YAML files (multi-document allowed) or directories of *.yaml / *.yml",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="also read each valid policy's routing objects in its cluster (the kubeconfig's, or "
        "--context) and print what graylane meets there: a missing object, a rate limiter or "
        "circuit breaker of the user's on the route and what router option userProtection does "
        "with it (warnings do not fail)",
    )
    p.add_argument(
        "--context", default="", help="with --live: the kubeconfig context of the policies' cluster"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also store the valid files' compiled form in the policy cache (GRAYLANE_POLICY_CACHE), "
        "so the functions' first cold start skips YAML (e.g. in an image build)",
    )


def _policy_files(target: str) -> list[str]:
    from pathlib import Path

    from functions.policies import POLICY_SUFFIXES

    path = Path(target)
    if path.is_dir():
        return [
            str(p)
            for p in sorted(path.iterdir())
            if p.suffix in POLICY_SUFFIXES and not p.name.startswith(".")
        ]
    return [target]


@command("validate", "check policy files and print every problem with its field path", _validate_arguments)
def validate(args: argparse.Namespace) -> int:
    import os

    from functions.errors import PolicyError
    from functions.policies import load_policy_file
    from functions.policy_cache import PolicyCache

    # a cached entry was valid with this very text and parser, so reading it validates as well
    cache = PolicyCache.configured(os.environ.get("GRAYLANE_POLICY_CACHE", "")) if args.compile else None
    status = EXIT_OK
    declared: dict[str, str] = {}  # app -> file, to catch one app declared twice
    for target in args.files:
        files = _policy_files(target)
        if not files:
            print(f"{target}: no *.yaml or *.yml policy files in this directory", file=sys.stderr)
            status = EXIT_PROBLEMS
        for file in files:
            try:
                policies = load_policy_file(file, cache)
            except PolicyError as err:
                for path, message in err.problems:
                    where = "" if path.startswith("(") else f"{path}: "  # "(file)", "(document)": no field
                    print(f"{file}: {where}{message}", file=sys.stderr)
                status = EXIT_PROBLEMS
                continue
            for policy in policies:
                if policy.app in declared:
                    print(
                        f"{file}: metadata.name: {policy.app} is already declared by {declared[policy.app]}",
                        file=sys.stderr,
                    )
                    status = EXIT_PROBLEMS
                    continue
                declared[policy.app] = file
                print(f"OK {file} ({policy.app}: {len(policy.stages)} stages)")
                if args.live:
                    status = max(status, _live(file, policy, args.context))
    return status


def _live(file: str, policy: Policy, context: str) -> int:
    """validate --live for one policy: its router surveys the objects it routes on in the cluster of each wave
    (kubeconfig context, or --context for the current one). A missing object is a problem (the release would
    fail on it); what the router meets of the user's is a warning; an unreachable cluster is exit 3."""
    import os

    from functions.errors import ConfigError, GraylaneError, MissingObject, ProviderUnavailable
    from functions.providers.factory import KubernetesProviders
    from functions.providers.kube import client_from
    from functions.runner import route_target
    from functions.settings import Settings

    kubeconfig = os.environ.get("KUBECONFIG") or None  # as set now (the client library reads it at import)
    providers = KubernetesProviders(
        Settings.from_env(), client_for=lambda c: client_from(kubeconfig=kubeconfig, context=c or None)
    )
    status = EXIT_OK
    try:
        for cluster in [w.cluster for w in policy.waves] or [context]:
            where = f"{file} ({policy.app}, router {policy.router.provider}" + (f", cluster {cluster})" if cluster
                                                                                 else ")")  # fmt: skip
            try:
                providers.client(cluster)
            except (ConfigError, ProviderUnavailable) as err:  # no such context, no kubeconfig
                print(f"{where}: cannot reach the cluster: {err}", file=sys.stderr)
                return EXIT_UNREACHABLE
            try:
                router = providers.router(policy, cluster)
                target = route_target(policy, cluster)
                if (
                    policy.router.options.get("create") is not True
                ):  # validate never writes: reconcile only reads
                    router.reconcile(target)
                notes = tuple(router.survey(target) or ())
            except MissingObject as err:
                print(f"{where}: {err}", file=sys.stderr)
                status = EXIT_PROBLEMS
                continue
            except ProviderUnavailable as err:
                print(f"{where}: cannot reach the cluster: {err}", file=sys.stderr)
                return EXIT_UNREACHABLE
            except GraylaneError as err:  # an ambiguous route, an option the live object contradicts
                print(f"{where}: {err}", file=sys.stderr)
                status = EXIT_PROBLEMS
                continue
            for note in notes:
                print(f"WARN {where}: {note}")
    finally:
        providers.close()
    return status


# --- import ----------------------------------------------------------------------------------------


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="YAML files (multi-document; - for stdin) with Argo Rollouts Rollouts and their "
        "AnalysisTemplates, or Flagger Canaries and their MetricTemplates, plus the Deployments, "
        "Ingresses and VirtualServices they refer to",
    )
    p.add_argument("--out", default="", metavar="FILE", help="write the policies to FILE instead of stdout")


@command(
    "import",
    "turn Argo Rollouts and Flagger objects into graylane policies, printing what they could not express",
    _import_arguments,
)
def import_(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from functions.core.policy_parse import problems
    from functions.importers import convert, importable
    from functions.importers.render import to_yaml

    objects: list[tuple[str, dict[str, Any]]] = []
    for file in args.files:
        try:
            raw = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
            objects += [(file, d) for d in yaml.safe_load_all(raw) if isinstance(d, dict)]
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            print(f"{file}: cannot read: {err}", file=sys.stderr)
            return EXIT_PROBLEMS
    origin: dict[tuple[Any, ...], str] = {
        (
            d.get("kind"),
            (d.get("metadata") or {}).get("namespace") or "default",
            (d.get("metadata") or {}).get("name"),
        ): f
        for f, d in objects
        if importable(d)
    }
    imported = convert(d for _, d in objects)
    if not imported:
        print(
            f"{', '.join(args.files)}: no Argo Rollouts Rollout or Flagger Canary to import", file=sys.stderr
        )
        return EXIT_PROBLEMS
    status, texts = EXIT_OK, []
    for item in imported:
        kind, _, ref = item.source.partition(" ")
        file = origin.get((kind, *ref.split("/", 1)), "")
        for note in item.notes:
            print(f"{file}: {item.source}: {note}", file=sys.stderr)
        if problems(item.document):
            status = EXIT_PROBLEMS
        texts.append(to_yaml(item, file))
    out = "---\n".join(texts)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(out)
        print(
            f"wrote {len(imported)} polic{'y' if len(imported) == 1 else 'ies'} to {args.out}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(out)
    return status


# --- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graylane", description="Progressive delivery as small event-driven functions."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        cmd.arguments(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


# --- demo ------------------------------------------------------------------------------------------


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--simulated",
        action="store_true",
        help="the in-process demo instead: recording providers and a simulated clock, in seconds",
    )
    p.add_argument(
        "--fast", action="store_true", help="shorter pauses (about 80 s instead of about 3 minutes)"
    )
    p.add_argument(
        "--report",
        default="graylane-demo-report.html",
        metavar="FILE",
        help="where to write the HTML report (its data goes next to it as .json)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, stack.json)")
    p.add_argument("--no-live", action="store_true", help="print one line per change instead of redrawing")


@command(
    "demo",
    "run the main job end to end on local HAProxy, Prometheus, Alertmanager and hey "
    "(--simulated: in-process, simulated clock)",
    _demo_arguments,
)
def demo(args: argparse.Namespace) -> int:
    if args.simulated:
        from functions.demo import run

        state = run()
        return EXIT_OK if state.release is not None else EXIT_PROBLEMS
    from functions.local.scenario import run as run_real

    result = run_real(
        fast=args.fast, report_path=args.report, keep=args.keep, tty=False if args.no_live else None
    )
    print(f"elapsed {result.elapsed:.1f} s; report {result.report or '(not written)'}")
    if result.workdir:
        print(f"work directory kept: {result.workdir}")
    if not result.ok:
        print(f"demo failed: {result.error}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_PROBLEMS


# --- serve -----------------------------------------------------------------------------------------


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    # defaults are None: each option falls back to its environment variable, then to ServeOptions' default
    p.add_argument(
        "--store",
        default=None,
        help="state store URL (GRAYLANE_STORE; default sqlite:///graylane.db; "
        "with --context the context's ConfigMaps)",
    )
    p.add_argument(
        "--policies",
        default=None,
        help="policy directory, or configmap:// (GRAYLANE_POLICIES; default infra/examples)",
    )
    p.add_argument(
        "--context",
        default=None,
        help="kubeconfig context: ConfigMap store and that cluster (GRAYLANE_CONTEXT)",
    )
    p.add_argument(
        "--providers",
        choices=("local", "recording", "kubernetes"),
        default=None,
        help="GRAYLANE_PROVIDERS; default recording (in memory: nothing in a cluster changes)",
    )
    p.add_argument(
        "--local-stack",
        default=None,
        metavar="FILE",
        help="--providers local: the stack's ports and HAProxy socket (stack.json of `graylane demo "
        "--keep`; GRAYLANE_LOCAL_STACK)",
    )
    p.add_argument(
        "--prometheus",
        default=None,
        help="Prometheus URL for --providers kubernetes (GRAYLANE_PROMETHEUS; default http://127.0.0.1:9090)",
    )
    p.add_argument(
        "--host",
        default=None,
        help="public listener: /hooks, /api, /chatops, /ui, /healthz, /metrics "
        "(GRAYLANE_HOST; default 127.0.0.1)",
    )
    p.add_argument("--port", type=int, default=None, help="GRAYLANE_PORT; default 8080; 0 picks a free port")
    p.add_argument(
        "--internal-host",
        default=None,
        help="internal listener: POST /functions/{target} and POST "
        "/tick, authenticated with GRAYLANE_INTERNAL_TOKEN (GRAYLANE_INTERNAL_HOST; default 127.0.0.1)",
    )
    p.add_argument("--internal-port", type=int, default=None, help="GRAYLANE_INTERNAL_PORT; default 8081")
    p.add_argument(
        "--tick",
        default=None,
        help="interval of the analysis tick sweep, e.g. 5s or 500ms (GRAYLANE_TICK_INTERVAL; default 5s)",
    )


@command("serve", "run the gateway, every function and the analysis ticker in one process", _serve_arguments)
def serve(args: argparse.Namespace) -> int:
    from functions.errors import ConfigError
    from functions.serve import ServeOptions, run

    try:
        opts = ServeOptions.from_env(
            store=args.store,
            policies=args.policies,
            context=args.context,
            providers=args.providers,
            host=args.host,
            port=args.port,
            internal_host=args.internal_host,
            internal_port=args.internal_port,
            tick=args.tick,
            prometheus=args.prometheus,
            local_stack=args.local_stack,
        )
        return run(opts, out=lambda line: print(line, flush=True))
    except ConfigError as err:
        print(f"graylane serve: {err}", file=sys.stderr)
        return EXIT_USAGE


# --- report ----------------------------------------------------------------------------------------


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", nargs="?", help="a report's .json data (written by `graylane demo` next to its HTML)"
    )
    p.add_argument(
        "--store",
        default="",
        help="build the report from this store's state instead, e.g. sqlite:///graylane.db",
    )
    p.add_argument("--app", default="", metavar="NAMESPACE/APP", help="with --store: the app")
    p.add_argument(
        "--policies", default="infra/examples", help="with --store: policy directory (stage names)"
    )
    p.add_argument(
        "-o", "--out", default="graylane-report.html", metavar="FILE", help="the HTML file to write"
    )


@command("report", "write the HTML release report (plots, verdicts, gates, history)", _report_arguments)
def report(args: argparse.Namespace) -> int:
    from functions.errors import GraylaneError
    from functions.local.report import report_command

    try:
        path = report_command(args.data, args.store, args.app, args.policies, args.out)
    except GraylaneError as err:
        print(f"graylane report: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"report {path}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors and 0 after --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return COMMANDS[args.command].run(args)


from functions import cli_release  # noqa: E402,F401  (registers the release commands; imports stay lazy)

if __name__ == "__main__":
    from functions.cli import main as _main  # the registered copy, not this __main__ module's

    sys.exit(_main())
