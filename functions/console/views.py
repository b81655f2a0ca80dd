"""The console's pages, rendered on the server: plain HTML, inline CSS and SVG, one small script.

Every value reaches the page through `render` (escaped unless it is markup built here), and nothing secret is
ever rendered: no token, no notifier URL, no key. Layout is one column on a phone, tables scroll sideways.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from functions import present
from functions.audit import AuditRecord
from functions.console import timeline
from functions.console.actions import Offer
from functions.console.html import EMPTY, Safe, attrs, join, render
from functions.core.policy import Policy
from functions.core.state import AppState
from functions.local.live import row_of, short

CSS = """
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --card: #fff; --accent: #2563eb; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; justify-content: space-between;
  padding: 10px 16px; background: #111827; color: #f9fafb; }
header a { color: #f9fafb; text-decoration: none; font-weight: 700; }
header form { display: inline; margin: 0 0 0 8px; }
header button { font-size: 13px; padding: 4px 10px; }
main { max-width: 1040px; margin: 0 auto; padding: 12px; }
h1 { font-size: 20px; margin: 8px 0 4px; } h2 { font-size: 16px; margin: 0 0 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px; margin: 12px 0; }
.muted { color: var(--muted); } .small { font-size: 13px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 6px; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #374151; white-space: nowrap; }
td a { color: var(--accent); font-weight: 600; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600;
  background: #e5e7eb; white-space: nowrap; }
.phase.progressing { background: #cffafe; color: #155e75; } .phase.waiting { background: #fef3c7; color: #92400e; }
.phase.paused, .phase.frozen { background: #fae8ff; color: #86198f; }
.phase.succeeded { background: #dcfce7; color: #166534; }
.phase.rolled-back, .phase.aborted, .phase.failed { background: #fee2e2; color: #991b1b; }
.verdict.pass { color: #16a34a; font-weight: 600; } .verdict.fail { color: #dc2626; font-weight: 600; }
.verdict.inconclusive { color: #ca8a04; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
svg.chart { width: 100%; height: auto; margin: 4px 0; }
svg .title { font-weight: 600; font-size: 13px; } svg .legend, svg .xtick, svg .ytick { font-size: 11px; fill: #374151; }
svg .ytick { text-anchor: end; } svg .xtick { text-anchor: middle; } svg .mark { stroke: #9ca3af; stroke-dasharray: 3 3; }
svg.bar { width: 120px; height: 10px; vertical-align: middle; }
form.actions { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; }
form.actions label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
input, select, button { font: inherit; }
input[type=text], input[type=password], input[type=number], select { padding: 8px; border: 1px solid #d1d5db;
  border-radius: 6px; min-width: 0; }
button { padding: 10px 16px; border-radius: 6px; border: 1px solid #1d4ed8; background: var(--accent); color: #fff;
  font-weight: 600; cursor: pointer; min-height: 44px; }
button.danger { background: #dc2626; border-color: #b91c1c; } button.plain { background: #374151; border-color: #111827; }
button[disabled] { opacity: .5; cursor: wait; }
.flash { padding: 10px 12px; border-radius: 6px; margin: 12px 0; }
.flash.ok { background: #dcfce7; color: #14532d; } .flash.error { background: #fee2e2; color: #7f1d1d; }
.flash.info { background: #dbeafe; color: #1e3a8a; }
code { font: 12px/1.4 ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
details summary { cursor: pointer; }
.login { max-width: 420px; margin: 40px auto; }
.login input { width: 100%; margin: 6px 0 12px; }
.live-dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; background: #9ca3af; margin-right: 6px; }
.live-dot.on { background: #16a34a; }
@media (max-width: 640px) { main { padding: 6px; } .card { padding: 10px; } th, td { padding: 4px; }
  .scroll table { min-width: 620px; } .scroll svg.chart { min-width: 620px; } button { flex: 1 1 auto; } }
"""
CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin"><link rel="icon" href="data:,">
<title>{title} · graylane</title><style>{css}</style>
<script src="{script}" integrity="{integrity}" defer></script></head>
<body{body_attrs}>
<header><a href="{prefix}/">graylane</a><span>{user}</span></header>
<main>{flash}{content}</main>
</body></html>
"""


def page(
    title: str,
    content: Safe,
    *,
    prefix: str,
    script: str,
    integrity: str,
    who: str = "",
    csrf: str = "",
    flash: Safe = EMPTY,
    stream: str = "",
) -> str:
    user = Safe("")
    if who:
        user = render(
            '<span class="live-dot" id="live-dot" title="live updates"></span>signed in as <b>{who}</b>'
            '<form method="post" action="{prefix}/logout"><input type="hidden" name="csrf" value="{csrf}">'
            '<button class="plain" type="submit">Sign out</button></form>',
            who=who,
            prefix=prefix,
            csrf=csrf,
        )
    return render(
        PAGE,
        title=title,
        css=Safe(CSS),
        script=script,
        integrity=integrity,
        prefix=prefix,
        user=user,
        flash=flash,
        content=content,
        body_attrs=attrs(data_stream=stream or None, data_csrf=csrf or None),
    )


def flash(kind: str, text: str) -> Safe:
    kind = kind if kind in ("ok", "error", "info") else "info"
    return render('<div class="flash {kind}" role="status" id="flash">{text}</div>', kind=kind, text=text)


def phase(name: str) -> Safe:
    return render('<span class="phase {name}">{name}</span>', name=name or "-")


def verdict(name: str) -> Safe:
    return render('<span class="verdict {name}">{name}</span>', name=name or "-")


def weight_bar(stable: int, canary: int) -> Safe:
    width = max(0, min(100, canary)) * 1.2
    return render(
        '<svg class="bar" viewBox="0 0 120 10" aria-hidden="true"><rect width="120" height="10" '
        'fill="#2563eb"/><rect x="{x}" width="{w}" height="10" fill="#ea580c"/></svg>',
        x=f"{120 - width:.1f}",
        w=f"{width:.1f}",
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "", empty: str = "none") -> Safe:
    if not rows:
        return render('<p class="muted small">{empty}</p>', empty=empty)
    head = join(render("<th>{h}</th>", h=h) for h in headers)
    body = join(render("<tr>{cells}</tr>", cells=join(render("<td>{c}</td>", c=c) for c in r)) for r in rows)
    return render(
        '<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        "</table></div>",
        cls=cls,
        head=head,
        body=body,
    )


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:.4g}{unit}"


# ---------------------------------------------------------------------------------------------- sign-in


def login(
    prefix: str, token_field: str, next_: str, error: str = "", tokens: bool = True, proxy: str = ""
) -> Safe:
    parts = [render('<div class="card login"><h1>Sign in to graylane</h1>')]
    if error:
        parts.append(flash("error", error))
    if tokens:
        parts.append(
            render(
                '<form method="post" action="{prefix}/login"><label for="token">API token</label>'
                '<input id="token" name="token" type="password" autocomplete="current-password" required maxlength="512">'
                '<input type="hidden" name="login" value="{login}"><input type="hidden" name="next" value="{next}">'
                '<button type="submit">Sign in</button></form>'
                '<p class="muted small">Tokens are the approval API\'s (GRAYLANE_API_TOKENS); each names a user, and the '
                "policy's approvers decide what that user may do.</p>",
                prefix=prefix,
                login=token_field,
                next=next_,
            )
        )
    else:
        parts.append(
            render("<p>No API tokens are configured (GRAYLANE_API_TOKENS), so nobody can sign in here.</p>")
        )
    if proxy:
        parts.append(
            render(
                '<p class="muted small">Or sign in through the reverse proxy in front of graylane '
                "(it names you in {header}).</p>",
                header=proxy,
            )
        )
    parts.append(Safe("</div>"))
    return join(parts)


BOUNCE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={target}">
<meta name="referrer" content="same-origin"><title>graylane</title></head>
<body><p><a href="{target}">Continue to graylane</a></p></body></html>
"""


def bounce(target: str) -> str:
    """A page that opens `target` again from this site (so a SameSite=Strict cookie comes along)."""
    return render(BOUNCE, target=target)


def message(title: str, text: str, back: str, kind: str = "error") -> Safe:
    return render(
        '<h1>{title}</h1>{flash}<p><a href="{back}">Back</a></p>',
        title=title,
        flash=flash(kind, text),
        back=back,
    )


# ---------------------------------------------------------------------------------------------- every app


def index_live(
    states: Sequence[AppState], policies: dict[str, Policy | None], now: datetime, prefix: str
) -> Safe:
    rows = []
    for state in states:
        policy = policies.get(state.app)
        r = row_of(state, policy)
        rel = state.release
        link = render('<a href="{prefix}/apps/{app}">{app}</a>', prefix=prefix, app=state.app)
        weights = render(
            "{bar} {s}/{c}{ab}",
            bar=weight_bar(r.stable, r.canary),
            s=r.stable,
            c=r.canary,
            ab=" +A/B" if r.ab else "",
        )
        version = (
            f"{rel.origin.version or '-'} → {rel.target.version}" if rel else state.stable.version or "-"
        )
        rows.append(
            (
                link,
                rel.id if rel else "-",
                version,
                phase(r.phase),
                r.stage,
                weights,
                verdict(r.verdict.split(" ", 1)[0]) if r.verdict != "-" else "-",
                r.gate,
                r.protection,
                present.age(rel.started_at, now) if rel else "-",
            )
        )
    table = _table(
        (
            "app",
            "release",
            "version",
            "phase",
            "stage",
            "weights stable/canary",
            "verdict",
            "gate",
            "protection",
            "age",
        ),
        rows,
        "apps",
        "No apps yet: a policy and a first push make one.",
    )
    return render('<div class="card"><h2>Apps</h2>{table}</div>', table=table)


# ---------------------------------------------------------------------------------------------- one app


def app_head(app: str, state: AppState) -> Safe:
    return render(
        '<h1>{app}</h1><p class="muted">stable {stable}{warm}</p>',
        app=app,
        stable=state.stable.version or "(none yet)",
        warm=f", previous {state.warm.version} kept warm" if state.warm else "",
    )


def intent(query: dict[str, str], offer: Offer) -> Safe:
    """The banner for a link that asks for an action (a notifier's Approve / Reject button)."""
    action = query.get("action", "")[:20]
    if action not in ("approve", "reject"):
        return Safe("")
    gate, release = query.get("gate", "")[:128], query.get("release", "")[:160]
    if release and offer.release and release != offer.release:
        return flash(
            "error",
            f"This link asks to {action} gate {gate or '?'} of release {release}, but the current "
            f"release is {offer.release}: it is not offered.",
        )
    if not offer.gate or (gate and gate != offer.gate):
        return flash(
            "info",
            f"This link asks to {action} gate {gate or '?'}, but the release is not waiting there now.",
        )
    return flash(
        "info",
        f"You opened a link to {action} gate {offer.gate} of release {offer.release}: "
        f"press the button below to confirm.",
    )


def actions(offer: Offer, csrf: str, prefix: str, app: str) -> Safe:
    """The actions card: one form, one submit button per action the user may take."""
    allowed = offer.allowed
    denied = [b for b in offer.buttons if not b.allowed]
    if not offer.buttons:
        body = render('<p class="muted small">Nothing to do for this release now.</p>')
    else:
        fields = [
            render(
                '<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="release" '
                'value="{release}"><input type="hidden" name="gate" value="{gate}">',
                csrf=csrf,
                release=offer.release,
                gate=offer.gate,
            )
        ]
        if allowed:
            if any(b.action == "approve" for b in allowed):
                for p in offer.params:
                    fields.append(
                        render(
                            '<label>{name} ({lo}..{hi})<input type="number" name="param.{name}" '
                            'min="{lo}" max="{hi}" value="{default}"></label>',
                            name=p.name,
                            lo=p.min,
                            hi=p.max,
                            default="" if p.default is None else p.default,
                        )
                    )
            if any(b.action == "rollback" for b in allowed) and offer.versions:
                options = join(render('<option value="{v}">{v}</option>', v=v) for v in offer.versions)
                fields.append(
                    render('<label>version<select name="version">{options}</select></label>', options=options)
                )
            fields.append(
                render(
                    '<label>reason (optional)<input type="text" name="reason" maxlength="2048" '
                    'placeholder="recorded in the history"></label>'
                )
            )
            for b in allowed:
                fields.append(
                    render(
                        '<button type="submit" name="action" value="{action}"{cls} '
                        'data-action="{action}">{label}</button>',
                        action=b.action,
                        label=b.label,
                        cls=attrs(class_="danger" if b.danger else None),
                    )
                )
            body = render(
                '<form class="actions" method="post" action="{prefix}/apps/{app}/actions">{fields}</form>',
                prefix=prefix,
                app=app,
                fields=join(fields),
            )
        else:
            body = render('<p class="muted small">You may not act on this release now.</p>')
        if denied:
            items = join(render("<li>{label}: {reason}</li>", label=b.label, reason=b.reason) for b in denied)
            body = render(
                '{body}<details class="small muted"><summary>not allowed for you ({n})</summary>'
                "<ul>{items}</ul></details>",
                body=body,
                n=len(denied),
                items=items,
            )
    for_release = f" · release {offer.release}" if offer.release else ""
    return render(
        '<div class="card" id="actions" data-key="{key}"><h2>Actions{rel}</h2>{body}</div>',
        key=hashlib.sha256(offer.key().encode()).hexdigest()[:16],
        rel=for_release,
        body=body,
    )


def app_live(state: AppState, policy: Policy | None, now: datetime, audit: Sequence[AuditRecord]) -> Safe:
    """Everything on an app's page that changes with the state (re-sent by the event stream)."""
    rel = state.release
    parts: list[Safe] = [_summary(state, policy, now)]
    data = timeline.model(state, policy, now)
    if data:
        plots = render('<div class="scroll">{svg}</div>', svg=join(Safe(s) for s in timeline.svg(data)))
        cap = ""
        if data["capped"]:
            cap = f" The router holds the canary at {data['routed']} %, below the desired {data['weight']} % (capped)."
        parts.append(
            render(
                '<div class="card"><h2>Timeline of {rel}</h2><p class="muted small">Seconds since the '
                "release started ({start}).{cap}</p>{plots}</div>",
                rel=data["release"],
                start=data["start"][:19].replace("T", " "),
                cap=cap,
                plots=plots,
            )
        )
        parts.append(_gates(data))
        parts.append(_verdicts(data))
    if rel is not None:
        entries = [h for h in state.history if h.release == rel.id][::-1]
        rows = [
            (
                h.at[:19].replace("T", " "),
                h.action,
                f"{h.phase_from} → {h.phase_to}"
                if h.phase_from and h.phase_from != h.phase_to
                else h.phase_to,
                "-" if h.weight is None else h.weight,
                f"{h.by.user} via {h.by.via}" if h.by is not None and h.by.via != "system" else "",
                short(h.reason, 200),
            )
            for h in entries[:50]
        ]
        parts.append(
            render(
                '<div class="card"><h2>History of {rel}</h2>{table}</div>',
                rel=rel.id,
                table=_table(("at", "action", "phase", "weight", "by", "reason"), rows),
            )
        )
    parts.append(_audit(audit))
    parts.append(_earlier(state))
    return join(parts)


def _summary(state: AppState, policy: Policy | None, now: datetime) -> Safe:
    rel = state.release
    r = row_of(state, policy)
    facts: list[tuple[str, Any]] = []
    if rel is None:
        facts.append(("release", "none yet"))
    else:
        facts += [
            ("release", f"{rel.id} ({rel.kind})"),
            ("version", f"{rel.origin.version or '-'} → {rel.target.version}"),
            ("phase", phase(rel.phase.value)),
            ("stage", r.stage),
        ]
        if rel.active:
            routed = state.routes.canary
            capped = " (capped)" if routed < rel.weight else ""
            facts.append(("canary weight", f"desired {rel.weight} %, routed {routed} %{capped}"))
        if rel.gate:
            facts.append(("waiting at gate", rel.gate))
        if rel.timer is not None:
            facts.append(("next", f"{rel.timer.name} due {rel.timer.due[:19].replace('T', ' ')}"))
        if rel.verdicts:
            v = rel.verdicts[-1]
            facts.append(
                ("latest verdict", render("{v} {reason}", v=verdict(v.verdict), reason=short(v.reason, 160)))
            )
        facts.append(
            ("started", f"{rel.started_at[:19].replace('T', ' ')} ({present.age(rel.started_at, now)} ago)")
        )
        if rel.ended_at:
            facts.append(("ended", f"{rel.ended_at[:19].replace('T', ' ')}: {short(rel.reason, 200)}"))
    facts.append(
        (
            "traffic",
            render(
                "{bar} stable {s} % / canary {c} %{ab}",
                bar=weight_bar(state.routes.stable, state.routes.canary),
                s=state.routes.stable,
                c=state.routes.canary,
                ab=" with A/B match" if state.routes.match else "",
            ),
        )
    )
    facts.append(("protection", r.protection))
    firing = [a for a in state.alerts if not a.resolved_at]
    if firing:
        facts.append(("alerts firing", len(firing)))
    body = join(render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in facts)
    return render('<div class="card"><h2>Now</h2><dl class="facts">{body}</dl></div>', body=body)


def _gates(data: dict[str, Any]) -> Safe:
    rows = [
        (
            g["gate"],
            g["decision"],
            g["at"][:19].replace("T", " "),
            g["user"],
            g["via"] + (f" in {g['channel']}" if g["channel"] else ""),
            ", ".join(f"{k}={v}" for k, v in g["params"].items()),
        )
        for g in reversed(data["gates"])
    ]
    waiting = (
        render("<p>Waiting at gate <b>{gate}</b>.</p>", gate=data["waiting"]) if data["waiting"] else Safe("")
    )
    return render(
        '<div class="card"><h2>Gates: who decided</h2>{waiting}{table}</div>',
        waiting=waiting,
        table=_table(("gate", "decision", "at", "by", "via", "params"), rows, "gates", "no gate decided yet"),
    )


def _verdicts(data: dict[str, Any]) -> Safe:
    items = []
    for i, v in enumerate(data["verdicts"]):
        metrics = [
            (
                m["name"],
                verdict(m["verdict"]),
                _num(m["value"]),
                _num(m["stable"]),
                short(m["reason"], 200),
                render("<code>{q}</code>", q=m["query"]) if m["query"] else "-",
            )
            for m in v["metrics"]
        ]
        items.append(
            render(
                '<details{open}><summary>+{t}s {v} <span class="small muted">{at} {reason}</span>'
                "</summary>{table}</details>",
                open=attrs(open=i == 0),
                t=f"{v['t']:.0f}",
                v=verdict(v["verdict"]),
                at=v["at"][11:19],
                reason=short(v["reason"], 160),
                table=_table(
                    ("metric", "verdict", "canary", "stable", "reason", "query"), metrics, "metrics"
                ),
            )
        )
    body = join(items) if items else render('<p class="muted small">no verdict yet</p>')
    return render(
        '<div class="card"><h2>Decisions: each verdict, its metric values and queries</h2>{body}</div>',
        body=body,
    )


def _audit(records: Sequence[AuditRecord]) -> Safe:
    rows = [
        (
            r.at[:19].replace("T", " "),
            r.user,
            r.via + (f" in {r.channel}" if r.channel else ""),
            r.action,
            r.gate,
            r.outcome,
            short(r.reason, 200),
        )
        for r in reversed(records)
    ]
    return render(
        '<div class="card"><h2>Audit: commands and who sent them</h2>{table}</div>',
        table=_table(
            ("at", "user", "via", "action", "gate", "outcome", "reason"), rows, "audit", "no command yet"
        ),
    )


def _earlier(state: AppState) -> Safe:
    current = state.release.id if state.release else ""
    seen: dict[str, list[Any]] = {}
    for h in state.history:
        if h.release and h.release != current:
            seen.setdefault(h.release, []).append(h)
    rows = []
    for rid, entries in reversed(list(seen.items())):
        first, last = entries[0], entries[-1]
        rows.append(
            (
                rid,
                first.at[:19].replace("T", " "),
                last.at[:19].replace("T", " "),
                last.phase_to,
                short(last.reason, 160),
            )
        )
    if not rows:
        return Safe("")
    return render(
        '<div class="card"><h2>Earlier releases</h2>{table}</div>',
        table=_table(("release", "started", "last change", "phase", "last reason"), rows[:20]),
    )
