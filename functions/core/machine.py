"""The release state machine. `decide()` is the only entry point; it does no I/O.

    decide(policy, state, event, now, observation) -> Decision(state, effects, events)

Every transition is in one table, TRANSITIONS (phase x event kind -> rule), at the end of this module; the
rules it names are in rules_*.py, the moves they share (enter a stage, roll back, fail, ...) in moves.py, and
a stage's own steps in the stage rules of stages.py and flag_stage.py. Under at-least-once delivery an
out-of-place event is normal: decide() never raises for one; it returns the state unchanged (commands are
still audited) and an `event.ignored` event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final, Literal, NamedTuple

from functions.core import per_version
from functions.core.analysis import analysis_due
from functions.core.effects import Effect
from functions.core.events import (
    NO_OBSERVATION,
    Alert,
    Command,
    EffectFailure,
    Emitted,
    Event,
    ImagePushed,
    Observation,
    Tick,
)
from functions.core.moves import ignore
from functions.core.policy import Policy
from functions.core.rules_alerts import on_alert, on_effect_failed
from functions.core.rules_commands import (
    cmd_abort,
    cmd_approve,
    cmd_pause,
    cmd_promote,
    cmd_reject,
    cmd_resume,
    cmd_rollback,
    cmd_weight,
)
from functions.core.rules_push import on_push
from functions.core.rules_tick import tick_held, tick_inactive, tick_progressing, tick_waiting
from functions.core.state import AppState, Phase, Release
from functions.core.tx import Tx

Rule = Callable[[Tx], None]


class Decision(NamedTuple):
    state: AppState
    effects: tuple[Effect, ...]
    events: tuple[Emitted, ...]


def decide(
    policy: Policy, state: AppState, event: Event, now: datetime, observation: Observation = NO_OBSERVATION
) -> Decision:
    if event.id and event.id in state.seen:
        return Decision(state, (), ())  # a redelivery: already decided
    tx = Tx(policy, state, event, now, observation)
    if per_version.active(policy):
        per_version.ensure_first(tx)  # a state from the pair model: its stable runs in the first Deployment
    problem = release_mismatch(state, event) if isinstance(event, Command) else ""
    if problem:
        ignore(tx, problem)  # a command for another release (an old button, a late delivery) moves nothing
    else:
        rule_for(tx.rel, event_kind(event))(tx)
    return Decision(*tx.result())


def event_kind(event: Event) -> str:
    if isinstance(event, ImagePushed):
        return "push"
    if isinstance(event, Tick):
        return "tick"
    if isinstance(event, Alert):
        return "alert"
    if isinstance(event, EffectFailure):
        return "effect-failed"
    return event.action


def wants_analysis(policy: Policy, state: AppState, now: datetime) -> bool:
    """Should the runner measure metrics before deciding on a tick? (Pure, used by the runner.)"""
    return analysis_due(policy, state.release, now)


def release_mismatch(state: AppState, cmd: Command) -> str:
    """Why `cmd` is not for the app's current release ("" when it is). Pure; the edges ask it too, so a
    sender hears the refusal at once, and decide() enforces it whatever reaches it later.

    A command names the release it was meant for (a button carries it; a typed command, the CLI and the API
    name the release current when they were sent) and, except a rollback (whose version is where to go), its
    target version. An app without any release has nothing to name.
    """
    rel = state.release
    if rel is None:
        return (
            f"the command names release {cmd.release}, but {state.app} has no release" if cmd.release else ""
        )
    current = f"{rel.id} ({rel.target.version})"
    if not cmd.release:
        return f"the command names no release; the current release of {state.app} is {current}"
    if cmd.release != rel.id:
        return (
            f"the command is for release {cmd.release}, but the current release of {state.app} is {current}"
        )
    if cmd.action != "rollback" and cmd.version and cmd.version != rel.target.version:
        return f"the command is for version {cmd.version}, but release {rel.id} deploys {rel.target.version}"
    return ""


# -- the table: phase x event -> rule ------------------------------------------------------------------
#
# Every transition, read top to bottom. A push, an alert and a failed effect are decided the same way
# whatever the phase (EVERY_PHASE); an app without an active release (none yet, or its last one ended)
# takes NO_RELEASE's row, an active release its phase's row. An event its row lacks is ignored, and says so
# ("not possible while the release is paused", "no active release"). The rules are in rules_*.py; entering
# a stage and a stage's timer firing are the stage rules they call (core/stages.py and core/flag_stage.py,
# by stage kind: moves.ENTER and moves.FIRE). To add a transition: write the rule, `def rule(tx: Tx) ->
# None`, in the rules_*.py of its event, and name it in the row of every phase that takes the event.

EVERY_PHASE: Final = "every phase"
NO_RELEASE: Final = "no active release"
Row = Phase | Literal["every phase", "no active release"]

TRANSITIONS: dict[Row, dict[str, Rule]] = {
    EVERY_PHASE: {"push": on_push, "alert": on_alert, "effect-failed": on_effect_failed},
    NO_RELEASE: {"tick": tick_inactive, "rollback": cmd_rollback},
    Phase.PROGRESSING: {
        "tick": tick_progressing,
        "promote": cmd_promote,
        "pause": cmd_pause,
        "resume": cmd_resume,
        "weight": cmd_weight,
        "abort": cmd_abort,
        "rollback": cmd_rollback,
    },
    Phase.WAITING: {
        "tick": tick_waiting,
        "approve": cmd_approve,
        "reject": cmd_reject,
        "promote": cmd_promote,
        "pause": cmd_pause,
        "weight": cmd_weight,
        "abort": cmd_abort,
        "rollback": cmd_rollback,
    },
    Phase.PAUSED: {
        "tick": tick_held,
        "resume": cmd_resume,
        "promote": cmd_promote,
        "weight": cmd_weight,
        "abort": cmd_abort,
        "rollback": cmd_rollback,
    },
    Phase.FROZEN: {"tick": tick_held, "abort": cmd_abort, "rollback": cmd_rollback},
}


def rule_for(rel: Release | None, kind: str) -> Rule:
    """The rule the table names for an event of `kind`: EVERY_PHASE's, else the row of the release's phase
    (NO_RELEASE's without an active release), else one that ignores the event."""
    if kind in TRANSITIONS[EVERY_PHASE]:
        return TRANSITIONS[EVERY_PHASE][kind]
    if rel is None or not rel.active:
        return TRANSITIONS[NO_RELEASE].get(kind, _not_active)
    return TRANSITIONS[rel.phase].get(kind, _not_now)


def _not_now(tx: Tx) -> None:
    ignore(tx, f"not possible while the release is {tx.release.phase.value}")


def _not_active(tx: Tx) -> None:
    ignore(tx, "no active release")
