"""`graylane status -w APP`: follow an app's release live in the terminal.

Polls the same status (and the newest history entries) that `graylane status` and `history` read, through
the same backend (the local store, or the approval API with `--server`), every `--interval` seconds. On a
terminal the view is redrawn in place (functions/local/live.py, the demo's live view); in a pipe or a CI
log each change is one line. With `-o json` (or `yaml`) each changed status is printed as one document.

It follows the release that is active (or the next one to start), across supersession to the newer
release, until it ends: exit 0 when it succeeded, 1 when it was rolled back, aborted or failed, 0 on
Ctrl-C. A server or store that stops answering is shown and retried, never fatal; an unknown app is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from functions.cli import EXIT_OK, EXIT_PROBLEMS
from functions.cli_release import Unreachable, _lines
from functions.local.live import LiveView, Row, short

ENDED = ("succeeded", "rolled-back", "aborted", "failed")  # superseded: the newer release is followed
HISTORY = 20  # newest history entries read per poll (notes under the table)
sleep = time.sleep  # the pause between polls (tests replace it)


def row_from_status(data: dict[str, Any]) -> Row:
    """The live view's row for a status document (present.status, as the API and the store answer it)."""
    routes = data.get("routes") or {}
    stable, canary = int(routes.get("stable", 100)), int(routes.get("canary", 0))
    rel = data.get("release")
    if not rel:
        return Row(
            app=str(data.get("app", "")),
            release=f"stable {data.get('stable') or '-'}",
            stable=stable,
            canary=canary,
            ab=bool(routes.get("abTest")),
        )
    active = rel.get("phase") not in (*ENDED, "superseded")
    verdict = rel.get("verdict") or "-"
    if rel.get("verdictReason") and verdict not in ("pass", "-"):
        verdict += f" ({short(str(rel['verdictReason']), 40)})"
    stage = str(rel.get("stage") or "-")
    if active and stage == "canary" and isinstance(rel.get("step"), int):
        stage += f" step {rel['step'] + 1}"
    return Row(
        app=str(data.get("app", "")),
        release=f"{rel.get('id', '-')} {rel.get('version', '')}".strip(),
        phase=str(rel.get("phase", "-")),
        stage=stage if active else "-",
        stable=stable,
        canary=canary,
        ab=bool(routes.get("abTest")),
        verdict=verdict,
        gate=rel.get("gate") or "-",
    )


def watch(
    args: argparse.Namespace, backend: Any, stream: TextIO | None = None, tty: bool | None = None
) -> int:
    out = stream or sys.stdout
    view = (
        LiveView(stream=out, tty=tty, title=f"graylane status -w {args.app}")
        if args.output == "table"
        else None
    )
    following = ""  # the release id being followed
    seen: set[tuple[str, ...]] = set()
    last: Any = None
    first = True
    try:
        while True:
            try:
                code, body = backend.execute(args.app, "status", {})
            except Unreachable as err:
                if view is not None:
                    view.update(view.rows, status=f"unreachable, retrying: {short(str(err), 60)}")
                sleep(args.interval)
                continue
            if code != 200:
                print(
                    f"graylane status {args.app}: {body.get('error') or body.get('message') or code}",
                    file=sys.stderr,
                )
                return EXIT_PROBLEMS
            data = body.get("data") or {}
            notes = _new_history(backend, args.app, seen, quiet=first)
            first = False
            if view is None:
                if data != last:
                    _document(args.output, data, out)
                    last = data
            else:
                for note in notes:
                    view.note(note)
                view.update([row_from_status(data)], status=f"every {args.interval:g}s, Ctrl-C stops")
            following, ended = _follow(data.get("release") or {}, following)
            if ended is not None:
                return ended
            sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if view is not None:
            view.close()


def _follow(rel: dict[str, Any], following: str) -> tuple[str, int | None]:
    """The release followed (the active one, else the one followed so far) and, once that one ended, the exit
    code: EXIT_OK when it succeeded."""
    phase = rel.get("phase", "")
    if rel and phase not in (*ENDED, "superseded"):
        return rel.get("id", ""), None
    if rel and rel.get("id") == following and phase in ENDED:
        return following, EXIT_OK if phase == "succeeded" else EXIT_PROBLEMS
    return following, None


def _new_history(backend: Any, app: str, seen: set[tuple[str, ...]], quiet: bool) -> list[str]:
    """Lines for history entries not shown yet (none on the first poll: the table says where things are)."""
    try:
        code, body = backend.execute(app, "history", {"limit": HISTORY})
    except Unreachable:
        return []
    if code != 200:
        return []
    entries = [e for e in body.get("data") or [] if isinstance(e, dict)]
    fresh = []
    for entry in entries:
        key = (
            str(entry.get("at")),
            str(entry.get("release")),
            str(entry.get("action")),
            str(entry.get("eventId")),
        )
        if key not in seen:
            seen.add(key)
            fresh.append(entry)
    return [] if quiet else _lines("history", fresh)


def _document(output: str, data: dict[str, Any], out: TextIO) -> None:
    if output == "json":
        out.write(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    else:
        import yaml

        out.write("---\n" + yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
    out.flush()
