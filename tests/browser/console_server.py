"""`graylane serve` for the browser test: the real command (CLI, both listeners, SQLite, the in-process runner and
ticker) with the recording providers measuring believable values (tests/console_support.measure) instead of flat
ones, so the timeline the test screenshots has something to show. Every other setting comes from the environment.

    python -m tests.browser.console_server --port 0 --internal-port 0
"""

from __future__ import annotations

import sys
from typing import Any

import functions.serve as serve
from functions.cli import main
from tests.console_support import measure

_make_providers = serve.make_providers


def make_providers(opts: Any, out: Any = print) -> Any:
    if opts.providers == "recording":
        from functions.providers.recording import RecordingProviders

        return RecordingProviders(measure=measure)
    return _make_providers(opts, out)


if __name__ == "__main__":
    serve.make_providers = make_providers
    sys.exit(main(["serve", *sys.argv[1:]]))
