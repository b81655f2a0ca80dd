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
from dataclasses import dataclass

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[
        [Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as subcommand `name`; the function itself is returned unchanged."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


# --- validate --------------------------------------------------------------------------------------


def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="policy YAML files (multi-document allowed) or directories of *.yaml / *.yml")


def _policy_files(target: str) -> list[str]:
    from pathlib import Path

    from functions.policies import POLICY_SUFFIXES

    path = Path(target)
    if path.is_dir():
        return [str(p) for p in sorted(path.iterdir()) if p.suffix in POLICY_SUFFIXES and not p.name.startswith(".")]
    return [target]


@command("validate", "check policy files and print every problem with its field path", _validate_arguments)
def validate(args: argparse.Namespace) -> int:
    from functions.errors import PolicyError
    from functions.policies import load_policy_file

    status = EXIT_OK
    declared: dict[str, str] = {}  # app -> file, to catch one app declared twice
    for target in args.files:
        files = _policy_files(target)
        if not files:
            print(f"{target}: no *.yaml or *.yml policy files in this directory", file=sys.stderr)
            status = EXIT_PROBLEMS
        for file in files:
            try:
                policies = load_policy_file(file)
            except PolicyError as err:
                for path, message in err.problems:
                    where = "" if path.startswith("(") else f"{path}: "  # "(file)", "(document)": no field
                    print(f"{file}: {where}{message}", file=sys.stderr)
                status = EXIT_PROBLEMS
                continue
            for policy in policies:
                if policy.app in declared:
                    print(f"{file}: metadata.name: {policy.app} is already declared by {declared[policy.app]}",
                          file=sys.stderr)
                    status = EXIT_PROBLEMS
                    continue
                declared[policy.app] = file
                print(f"OK {file} ({policy.app}: {len(policy.stages)} stages)")
    return status


# --- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graylane", description="Progressive delivery as small event-driven functions.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        cmd.arguments(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


# --- demo ------------------------------------------------------------------------------------------


@command("demo", "run the main job end to end on the embedded default (in-process, simulated clock)",
         lambda p: None)
def demo(args: argparse.Namespace) -> int:
    from functions.demo import run

    state = run()
    return EXIT_OK if state.release is not None else EXIT_PROBLEMS


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

