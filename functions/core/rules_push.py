"""The rule for an image pushed: the app's first image becomes stable; any other starts a release (after
superseding the active one, whose traffic goes back first). Named by core/machine.py's TRANSITIONS, whatever
the phase. Pure.
"""

from __future__ import annotations

from functions.core import events as ev
from functions.core import per_version
from functions.core.effects import STABLE_ONLY
from functions.core.events import ImagePushed
from functions.core.flag_stage import flags_off
from functions.core.hooks import held
from functions.core.moves import enter_from, ignore, per_version_refusal, rollback, start
from functions.core.state import Phase, Release, Version
from functions.core.tx import Tx


def on_push(tx: Tx) -> None:
    event = tx.event
    assert isinstance(event, ImagePushed)
    target, rel, state = event.target, tx.rel, tx.state
    if rel is not None and rel.active and rel.target.image == target.image:
        return ignore(tx, f"{target.version} is already being released")
    if (rel is None or not rel.active) and state.stable.image == target.image:
        return ignore(tx, f"{target.version} is already stable")
    if not state.stable.image:
        return _initialise(tx, target)
    if per_version.active(tx.policy) and (why := per_version_refusal(tx, target)):
        return ignore(tx, why)
    again = per_version.active(tx.policy) and state.stable.image == target.image
    if rel is not None and rel.active:
        _supersede(tx, rel, target, again)
    if again:  # one Deployment per version: the stable's own serves it, there is nothing to release
        return
    start(tx, target, kind="release")
    if held(tx, "confirm-rollout", "enter:0"):
        return
    enter_from(tx, 0)


def _supersede(tx: Tx, rel: Release, target: Version, again: bool) -> None:
    """The active release `rel` makes way for `target` (`again`: the stable version itself, per-version)."""
    why = f"superseded by {target.version}"
    if again:
        why += ", the stable version, which keeps running in its own Deployment"
    if rel.promoted and rel.wave + 1 >= len(tx.policy.waves):
        # fully promoted, only being watched: it stays stable and the new release starts from it (a flag it
        # was still rolling out goes off: the new release rolls it out again)
        flags_off(tx, below=100)
        tx.update(watching=False, analysing=False, canary_deployed=False)
        tx.set_phase(Phase.SUPERSEDED, "superseded", why, ev.RELEASE_SUPERSEDED)
    else:
        # the way back of a rollback: traffic to stable first, and clusters already on the target return
        # to the origin, so the new release starts from one known stable everywhere
        rollback(tx, why, Phase.SUPERSEDED, "superseded", ev.RELEASE_SUPERSEDED)
    if tx.state.warm is not None and per_version.active(tx.policy):
        per_version.drop_warm(tx)  # the previous version's own Deployment goes now
    elif tx.state.warm is not None:  # the new canary replaces the warm copy in the canary workload
        tx.set_state(warm=None, warm_until="")


def _initialise(tx: Tx, target: Version) -> None:
    """The first image an app ever sees becomes stable directly: there is nothing to compare it with.

    In every wave's cluster, and with the route written out, so later releases find their route objects.
    Per-version model: it is what the first Deployment runs, which is left as it is (per_version.adopt).
    """
    if per_version.active(tx.policy):
        return per_version.adopt(tx, target)
    for cluster in [w.cluster for w in tx.policy.waves] or [""]:
        tx.effect("promote-stable", image=target.image, version=target.version, cluster=cluster)
        tx.effect("set-routes", routes=STABLE_ONLY, cluster=cluster)
    tx.set_state(stable=target, routes=STABLE_ONLY)
    tx.record("initialised", reason=f"{target.version} is the first version: made stable")
