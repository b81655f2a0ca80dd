"""The per-version workload model in the machine: one Deployment and one subset per version. Pure.

With `workload.model: per-version` (functions/core/slots.py names the slots) a release never changes the
image of a running Deployment:

- the first image graylane sees is the version the first Deployment (workload.name, the user's) runs:
  its slot is recorded, all traffic goes to its subset, nothing else changes (`adopt`);
- a release creates the target version's Deployment from the current stable one's spec (new image,
  version label updated, the rest kept) and adds its subset, at weight 0 (`deploy_target`); the stages
  move weights between the origin's subset and the target's, as in the pair model;
- promotion is a traffic switch: the target's subset becomes the stable side of the route. With
  `keepPrevious` the origin's Deployment stays running (warm) for that long and is then scaled down;
  without, it is scaled down at once (`promote`, `end_watch`);
- rollback sends traffic back to the origin's subset (scaling the origin up first if it was already
  scaled down) and scales the target down (`roll_back`); `rollback <version>` does the same towards
  any slot, creating it again from the stable's spec when its Deployment was deleted (`roll_back_to`);
- a retired (scaled-down) Deployment stays for a quick way back; beyond `workload.keepRetired` of them,
  the ones graylane created that were retired longest ago are deleted, and the router drops their
  subsets (`prune`).
  The first Deployment is never deleted, only scaled down while another version is stable.

The release records its origin and target slots, the state every slot that exists and which versions
the route is between (`AppState.routed`), so every effect names the Deployment or subsets it is for.
"""

from __future__ import annotations

from dataclasses import replace

from functions.core.effects import STABLE_ONLY
from functions.core.policy import Policy, PromoteStage
from functions.core.slots import Routed, Slot, clash, new_slot
from functions.core.state import AppState, Version
from functions.core.tx import Tx


def active(policy: Policy) -> bool:
    return policy.workload.per_version


def first_slot(policy: Policy, version: Version) -> Slot:
    """The user's first Deployment, running `version` (the first image graylane saw)."""
    w = policy.workload
    return Slot(
        version=version.version,
        image=version.image,
        workload=w.name,
        subset=w.subset,
        label=w.subset,
        owned=False,
    )


def stable_slot(state: AppState) -> Slot | None:
    return next((s for s in state.slots if s.version == state.stable.version), None)


def routed(tx: Tx, stable: Slot | None, canary: Slot | None) -> Routed:
    return Routed(
        stable=stable, canary=canary, subsets=tx.state.slots, label=tx.policy.workload.version_label
    )


def _with_slot(slots: tuple[Slot, ...], slot: Slot) -> tuple[Slot, ...]:
    """`slot` added (or replacing the one of its version) as the most recently used."""
    return tuple(s for s in slots if s.version != slot.version) + (slot,)


def _route(tx: Tx, stable: Slot | None, canary: Slot | None, plan: object = STABLE_ONLY) -> None:
    from functions.core.effects import RoutePlan

    assert isinstance(plan, RoutePlan)
    tx.route(plan, versions=routed(tx, stable, canary))


# -- slots for versions ------------------------------------------------------------------------------------


def slot_for(tx: Tx, target: Version) -> Slot | str:
    """The slot `target` runs in, or why it cannot have one (a reason to refuse the release)."""
    state, template = tx.state, tx.policy.workload.name_template
    current = stable_slot(state)
    mine = next((s for s in state.slots if s.version == target.version), None)
    if mine is not None:
        if mine.image == target.image:
            return mine
        if not mine.owned:
            return (
                f"version {target.version} is the first Deployment's ({mine.workload}, yours), which graylane "
                f"never re-images; release {target.image} under a new tag"
            )
        if current is not None and mine.workload == current.workload:
            return (
                f"version {target.version} is stable in {mine.workload}; release {target.image} under a new tag "
                "(each version has its own Deployment)"
            )
        return replace(mine, image=target.image)  # a retired Deployment of that tag: made anew with the image
    slot = new_slot(template, target.version, target.image)
    other = clash(slot, state.slots)
    if other is not None:
        return (
            f"version {target.version} would run in Deployment {slot.workload} with subset {slot.subset}, "
            f"which version {other.version} has ({other.workload}, subset {other.subset})"
        )
    return slot


def ensure_first(tx: Tx) -> None:
    """A state without slots (a pair-model app whose policy moved to per-version) starts from the stable version
    running in the first Deployment."""
    if not tx.state.slots and tx.state.stable.image:
        slot = first_slot(tx.policy, tx.state.stable)
        tx.set_state(slots=(slot,))
        tx.set_state(routed=routed(tx, slot, None))


def refusal(tx: Tx, target: Version) -> str:
    """Why a release (or a rollback) to `target` cannot start in this model ("" when it can)."""
    ensure_first(tx)
    found = slot_for(tx, target)
    return found if isinstance(found, str) else ""


# -- the rules ------------------------------------------------------------------------------------------------


def adopt(tx: Tx, target: Version) -> None:
    """The first image: what the first Deployment runs. Traffic to its subset; no Deployment changes."""
    slot = first_slot(tx.policy, target)
    tx.set_state(stable=target, slots=(slot,))
    _route(tx, slot, None)
    tx.record(
        "initialised",
        reason=f"{target.version} is the first version: it runs in {slot.workload} (subset "
        f"{slot.subset}), which graylane leaves as it is",
    )


def begin(tx: Tx) -> None:
    """A release (or rollback) just started: record the slots it moves between."""
    rel = tx.release
    found = slot_for(tx, rel.target)
    assert isinstance(found, Slot), found  # the caller refused the release otherwise
    tx.update(origin_slot=stable_slot(tx.state), target_slot=found)


def deploy_target(tx: Tx) -> None:
    """The target version's Deployment (from the stable's spec) and its subset at weight 0."""
    rel = tx.release
    target, origin = rel.target_slot, rel.origin_slot
    assert target is not None and origin is not None
    known = next((s for s in tx.state.slots if s.version == target.version), None)
    if known is not None and known.image != target.image:  # a retired Deployment of that tag: made anew
        tx.effect("delete-version", slot=known)
    tx.effect(
        "deploy-version", slot=target, image=target.image, version=target.version, source=origin.workload
    )
    tx.set_state(slots=_with_slot(tx.state.slots, target))
    tx.update(canary_deployed=True)
    _route(tx, origin, target, tx.state.routes)


def promote(tx: Tx, stage: PromoteStage) -> bool:
    """Promotion is a switch of the route to the target's subset; the origin's Deployment stays warm for
    keepPrevious, else it is scaled down now. True when the stage is complete."""
    from functions.core import events as ev
    from functions.core.analysis import watch_checks

    rel = tx.release
    if not rel.canary_deployed:  # no traffic stage ran: the target's Deployment comes first
        deploy_target(tx)
    target, origin = rel.target_slot, rel.origin_slot
    assert target is not None and origin is not None
    keep = stage.keep_previous > 0
    tx.update(match=(), weight=0)
    _route(tx, target, origin if keep else None)
    earlier = tuple(v for v in tx.state.revisions if v != rel.origin)
    revisions = ((rel.origin,) + earlier if rel.origin.image else earlier)[: tx.policy.revision_history]
    tx.set_state(stable=rel.target, revisions=revisions)
    tx.update(promoted=True)
    tx.record(
        "promoted",
        reason=f"{rel.target.version} is now stable: all traffic on subset {target.subset} "
        f"({target.workload})",
    )
    tx.emit(ev.RELEASE_PROMOTED)
    if keep:
        tx.set_state(warm=rel.origin, warm_until=tx.due(stage.keep_previous))
        analysis = tx.policy.analysis
        tx.update(
            watching=True, analysing=analysis is not None and bool(watch_checks(analysis)), passes_in_step=0
        )
        tx.set_timer("watch", stage.keep_previous)
        return False
    retire(tx, origin)
    tx.update(canary_deployed=False, analysing=False)
    return True


def end_watch(tx: Tx) -> None:
    """keepPrevious is over: the previous version leaves the route and its Deployment is scaled down."""
    rel = tx.release
    assert rel.target_slot is not None and rel.origin_slot is not None
    tx.set_state(warm=None, warm_until="")
    _route(tx, rel.target_slot, None)
    retire(tx, rel.origin_slot)


def drop_warm(tx: Tx) -> None:
    """A new release supersedes one being watched: the warm previous version goes now."""
    rel = tx.release
    tx.set_state(warm=None, warm_until="")
    if rel.target_slot is not None and rel.origin_slot is not None:
        _route(tx, rel.target_slot, None)
        retire(tx, rel.origin_slot)


def roll_back(tx: Tx) -> None:
    """Traffic back to the origin's subset (the origin scaled up first when it was retired already), then the
    target's Deployment scaled down. The caller records the state change (stable, revisions) and the phase."""
    rel, state = tx.release, tx.state
    origin, target = rel.origin_slot, rel.target_slot
    assert origin is not None and target is not None
    warm = rel.watching and state.warm == rel.origin
    if rel.promoted and not warm:  # the origin was scaled down already: it runs again before traffic moves
        _deploy(tx, origin, source=target.workload)
    _route(tx, origin, None)
    if rel.canary_deployed or rel.promoted:
        tx.set_state(warm=None, warm_until="")
        retire(tx, target, stable=origin)


def roll_back_to(tx: Tx, current: Slot | None) -> None:
    """`rollback <version>` after the release ended: the version's Deployment runs (scaled up, or created again
    from the stable's spec), traffic switches to its subset, the current stable's Deployment is scaled down."""
    rel = tx.release
    target = rel.target_slot
    assert target is not None
    source = current.workload if current is not None else target.workload
    known = next((s for s in tx.state.slots if s.version == target.version), None)
    if known is not None and known.image != target.image and known.owned:
        tx.effect("delete-version", slot=known)
    _deploy(tx, target, source=source)
    _route(tx, target, None)
    if current is not None and current.workload != target.workload:
        retire(tx, current, stable=target)


def _deploy(tx: Tx, slot: Slot, source: str) -> None:
    tx.effect("deploy-version", slot=slot, image=slot.image, version=slot.version, source=source)
    tx.set_state(slots=_with_slot(tx.state.slots, slot))


def retire(tx: Tx, slot: Slot, stable: Slot | None = None) -> None:
    """Scale `slot`'s Deployment down (it already left the route), then prune what keepRetired does not keep:
    the slot counts as the most recently used, so the Deployments kept are the ones retired last."""
    tx.effect("scale-down-version", slot=slot, version=slot.version)
    known = next((s for s in tx.state.slots if s.workload == slot.workload), None)
    if known is not None:
        tx.set_state(slots=_with_slot(tx.state.slots, known))
    prune(tx, stable or stable_slot(tx.state))


def prune(tx: Tx, stable: Slot | None) -> None:
    """Delete the least recently retired Deployments graylane created beyond keepRetired; the route then keeps their
    subsets no more (the router removes only subsets it added). The first Deployment is never deleted."""
    keep = tx.policy.workload.keep_retired
    live = {stable.workload} if stable is not None else set()
    if tx.state.warm is not None:
        live |= {s.workload for s in tx.state.slots if s.version == tx.state.warm.version}
    retired = [s for s in tx.state.slots if s.owned and s.workload not in live]
    gone = retired[: max(0, len(retired) - keep)]
    if not gone:
        return
    for slot in gone:
        tx.effect("delete-version", slot=slot, version=slot.version)
    names = {s.workload for s in gone}
    tx.set_state(slots=tuple(s for s in tx.state.slots if s.workload not in names))
    now = tx.state.routed
    tx.route(tx.state.routes, versions=replace(now, subsets=tx.state.slots))
    tx.record("pruned", reason="deleted " + ", ".join(sorted(names)) + f" (keepRetired {keep})")
