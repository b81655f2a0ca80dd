"""`make bench`: graylane's benchmarks. Prints a table and writes JSON under tests/bench/results/.

These machines are noisy: compare ratios measured in the same run (cold start is reported next to a
hello-world function started the same way, interleaved).
"""

from __future__ import annotations

import argparse
import sys

from tests.bench.registry import SUITES, table, write


def main(argv: list[str] | None = None) -> int:
    import tests.bench.coldstart  # noqa: F401  (each module registers its suites)
    import tests.bench.core_bench  # noqa: F401
    import tests.bench.detection  # noqa: F401
    import tests.bench.protection  # noqa: F401
    import tests.bench.realstack  # noqa: F401
    import tests.bench.store_bench  # noqa: F401

    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("suites", nargs="*", help=f"default: all of {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str, str]] = []
    for name in args.suites or list(SUITES):
        if name not in SUITES:
            parser.error(f"unknown suite {name}; known: {', '.join(SUITES)}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = SUITES[name](args)
        path = write(name, result)
        rows += [tuple(r) for r in result["rows"]]  # type: ignore[misc]
        print(f"  wrote {path}", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
