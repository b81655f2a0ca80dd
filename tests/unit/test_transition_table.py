"""The shape of the machine's one transition table (functions/core/machine.py, TRANSITIONS): a row for each
active phase and none for an ended one, every command and event kind taken somewhere, nothing shadowed, and
every rule it names a rule of a rules_*.py module. Behaviour is in test_machine.py; this pins the table."""

from __future__ import annotations

from functions.core.events import MUTATING_ACTIONS
from functions.core.machine import EVERY_PHASE, NO_RELEASE, TRANSITIONS, rule_for
from functions.core.state import TERMINAL, Phase, Release, Version


def _release(phase: Phase) -> Release:
    return Release(id="web-1", seq=1, target=Version(), origin=Version(), started_at="", phase=phase)


def test_every_active_phase_has_a_row_and_no_ended_one_does() -> None:
    phases = {row for row in TRANSITIONS if isinstance(row, Phase)}

    assert phases == set(Phase) - TERMINAL
    assert set(TRANSITIONS) == phases | {EVERY_PHASE, NO_RELEASE}


def test_every_command_and_event_kind_is_taken_by_some_row() -> None:
    taken = {kind for row in TRANSITIONS.values() for kind in row}

    assert taken == {*MUTATING_ACTIONS, "push", "tick", "alert", "effect-failed"}


def test_no_row_names_an_event_every_phase_already_decides() -> None:
    for row, rules in TRANSITIONS.items():
        if row != EVERY_PHASE:
            assert not set(rules) & set(TRANSITIONS[EVERY_PHASE]), row


def test_every_rule_is_a_named_rule_of_a_rules_module() -> None:
    for rules in TRANSITIONS.values():
        for kind, rule in rules.items():
            assert rule.__module__.startswith("functions.core.rules_"), (kind, rule)
            assert not rule.__name__.startswith("_") and rule.__name__ != "<lambda>", (kind, rule)


def test_rule_for_reads_the_table() -> None:
    assert rule_for(None, "push") is TRANSITIONS[EVERY_PHASE]["push"]
    assert rule_for(_release(Phase.WAITING), "alert") is TRANSITIONS[EVERY_PHASE]["alert"]
    assert rule_for(None, "tick") is TRANSITIONS[NO_RELEASE]["tick"]
    assert rule_for(_release(Phase.SUCCEEDED), "rollback") is TRANSITIONS[NO_RELEASE]["rollback"]
    for phase in set(Phase) - TERMINAL:
        for kind, rule in TRANSITIONS[phase].items():
            assert rule_for(_release(phase), kind) is rule
    assert rule_for(_release(Phase.FROZEN), "approve").__name__ == "_not_now"
    assert rule_for(None, "approve").__name__ == "_not_active"
