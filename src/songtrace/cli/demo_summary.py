"""The demo's closing lines: what was generated, where the credit went, how the self-influence check and the opt-out did.

`human_summary(summary)` reads only the demo's summary dict (what `<home>/demo/summary.json` holds),
so the same lines can be printed again from a saved summary.
"""

from __future__ import annotations

import math
from typing import Any


def finite(obj: Any) -> Any:
    """The summary as plain JSON: NaN and infinities (a figure a stage could not measure) become None, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _num(x: float | None, fmt: str = "{:+.3g}") -> str:
    return "—" if x is None else fmt.format(x)


def human_summary(summary: dict[str, Any]) -> list[str]:
    """The lines the demo ends with: what was generated, where the credit went, how the self-influence check and the opt-out did."""
    lines = []
    t = summary["totals"]
    w = summary["world"]
    lines.append(f"songtrace demo finished: {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU "
                 f"(load average {t['load_mean']:.1f}, max {t['load_max']:.1f}) on a {w['tracks']}-track world of {w['artists']} artists")
    g, cond = summary["generations"], summary["conditioning"].get("songclap", {})
    closer = round((cond.get("fraction_closer_to_own") or 0) * (cond.get("generations") or 0))
    lines.append(f"generated {g['n']} tracks of {g['seconds']:g} s, one per artist's prompt, in {g['dir']}: {closer} of "
                 f"{cond.get('generations')} sound most like their prompted artist's training tracks "
                 f"(songclap; chance {cond.get('chance') or 0:.2f})")
    si = summary["selfinfluence"]
    m, u = si["metrics"], si["unlearn"]
    lines.append(f"self-influence: unlearning a training track ranks it first for {_pct(m.get('frac_rank1'))} of {si['n_targets']} "
                 f"targets (mean rank {_num(m.get('mean_rank'), '{:.2f}')} of {summary['world']['train_tracks']}) at the best of "
                 f"{si['n_cells']} cells: lr {u['lr']:g}, {u['steps']} step(s), layers {u['group']}, mask {u['mask']} "
                 "(saved for this model; attribution uses it)")
    loc = summary["localise"]
    for q in [loc, *summary["attribute"]["queries"]]:
        top = q["top"][0] if q["top"] else {}
        credit = q["credits"][0] if q["credits"] else {}
        lines.append(f"  {q['query_id']} (prompt naming {q['artist']}): most attributed {top.get('train_id')} \"{top.get('title')}\" "
                     f"by {top.get('artist')}; {credit.get('artist')} holds {_pct(credit.get('share'))} of the credit")
    spans = ", ".join(f"{x['start_s']:.3g}-{x['end_s']:.3g} s: {x['top'][0]['train_id']} ({x['top'][0]['artist']})" for x in loc["windows"])
    lines.append(f"  localised {loc['query_id']} in {len(loc['windows'])} windows; the most attributed track per window: {spans}")
    cmp = summary["compare"]
    corr = ", ".join(f"{k} {_num(v, '{:.2f}')}" for k, v in (cmp.get("pearson_with_reference") or {}).items())
    lines.append(f"baselines on {sum((cmp.get('queries') or {}).values())} queries: Pearson with unlearning {corr}")
    hits = [p for p in cmp.get("planted") or [] if p.get("method") == "unlearning"]
    if hits:
        lines.append("  planted ground truth, unlearning: "
                     + "; ".join(f"{p['kind']} hit@10 {_num(p.get('hit@10'), '{:.2f}')}" for p in hits))
    opt, ev = summary["optout"], summary["optout_eval"]["figures"]
    unl, orig = ev.get("unlearned", {}), ev.get("original", {})
    ret = ev.get("retrained", {})
    parts = [f"forget loss {_num(unl.get('loss.delta_forget'))}" + (f" (retrained {_num(ret.get('loss.delta_forget'))})" if ret else ""),
             f"retain loss {_num(unl.get('loss.delta_retain'))}",
             f"membership AUC {_num(orig.get('membership.auc'), '{:.2f}')} -> {_num(unl.get('membership.auc'), '{:.2f}')}"
             + (f" (retrained {_num(ret.get('membership.auc'), '{:.2f}')})" if ret else ""),
             f"P(artist) on its captions {_num(orig.get('closeness.caption.artist_probability'), '{:.2f}')} -> "
             f"{_num(unl.get('closeness.caption.artist_probability'), '{:.2f}')}"
             + (f" (retrained {_num(ret.get('closeness.caption.artist_probability'), '{:.2f}')})" if ret else ""),
             f"its credit share {_pct(orig.get('credit.artist_share'))} -> {_pct(unl.get('credit.artist_share'))}"
             + (f" (retrained {_pct(ret.get('credit.artist_share'))})" if ret else "")]
    lines.append(f"opt-out of {opt['artist']} ({opt['forget'].get('n_forget')} tracks, {opt['method']}): " + "; ".join(parts))
    lines.append(f"report: {summary['report']['report']}")
    return lines
