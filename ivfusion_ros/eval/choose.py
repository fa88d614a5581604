"""Which fusion variant the node runs by default: a written-down rule applied to an ``ivfusion eval`` report.

The default is chosen by measurement on the validation split (``msrs-split/val.txt``), never on the data the README
reports, and never by hand: ``ivfusion eval VAL_DAY,VAL_NIGHT --variants adaptive,laplacian,max,<learned...>
--detector ivdet --set detector.score_threshold=0.01`` (the COCO protocol: the detector's publishing threshold of
0.25 would cut the precision-recall curves short) puts the decision and its reasons in the report
(``default_choice``), and the config's default follows it. The rule, in order:

1. **Candidates** are the variants that are not baselines (:data:`BASELINES`: ``average``, ``max``, ``laplacian``).
2. **Gate: light effects.** On every data set where the report has light-effect measures (night scenes with
   headlights: ``GlareY``, ``GlareC``), the candidate must keep less glare than ``max`` (lower ``GlareY``) and show
   more structure inside the light sources (higher ``GlareC``). Suppressing glare is what the product is for at
   night; a variant that keeps it is not a default, whatever its scores.
3. **Rank by detection**: pooled mAP@0.5:0.95 of the package's detector on the fused images (the product's task).
4. **Ties** (within :data:`TIE` mAP) go to the variant that beats the Laplacian baseline on more of the six fusion
   metrics :data:`QUALITY` across the data sets, then to the cheaper one (median fuse time).

Without detection in the report, step 3 is skipped (ranking by step 4). Without light-effect measures, the gate
passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BASELINES", "QUALITY", "TIE", "choice_rows", "choose_default"]

#: Variants that are reference points, not candidates.
BASELINES = ("average", "max", "laplacian")
#: The fusion metrics whose wins over the Laplacian baseline break ties.
QUALITY = ("EN", "SD", "SF", "AG", "VIF", "Qabf")
#: Detection mAP@0.5:0.95 differences below this are ties.
TIE = 0.005


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else math.nan


def _metric(scope: Mapping[str, Any], variant: str, name: str) -> float:
    return _num(((scope.get("variants") or {}).get(variant) or {}).get("fusion_metrics", {}).get(name))


def _glare_ok(report: Mapping[str, Any], variant: str) -> tuple[bool, str]:
    checked = []
    for ds in report.get("datasets") or []:
        y, c = _metric(ds, variant, "GlareY"), _metric(ds, variant, "GlareC")
        my, mc = _metric(ds, "max", "GlareY"), _metric(ds, "max", "GlareC")
        if any(math.isnan(v) for v in (y, c, my, mc)):
            continue
        name = ds.get("name", "")
        if not (y < my and c > mc):
            return False, f"keeps glare on {name} (GlareY {y:.1f} vs max {my:.1f}, GlareC {c:.2f} vs max {mc:.2f})"
        checked.append(name)
    return True, ("glare suppressed on " + ", ".join(checked)) if checked else "no light effects measured"


def _wins(report: Mapping[str, Any], variant: str) -> tuple[int, int]:
    wins = total = 0
    for ds in report.get("datasets") or []:
        for m in QUALITY:
            v, ref = _metric(ds, variant, m), _metric(ds, "laplacian", m)
            if math.isnan(v) or math.isnan(ref):
                continue
            total += 1
            wins += v >= ref
    return wins, total


def choose_default(report: Mapping[str, Any], baselines: Sequence[str] = BASELINES) -> dict[str, Any]:
    """Apply the rule of the module docstring to ``report`` (a ``report.json`` document).

    Returns ``{"variant": name or None, "rule": text, "candidates": [row, ...]}``, one row per candidate with its
    ``map50_95``, ``wins`` / ``comparisons`` over the Laplacian baseline, ``glare_ok``, ``fuse_ms`` and ``why``, in
    the order of the ranking (the chosen one first).
    """
    variants = report.get("variants") or {}
    rows = []
    for name, summary in variants.items():
        if name in baselines:
            continue
        det = (summary or {}).get("detection") or {}
        ok, why = _glare_ok(report, name)
        wins, total = _wins(report, name)
        fuse = (((summary or {}).get("latency_ms") or {}).get("fuse") or {}).get("p50")
        rows.append({"variant": name, "map50_95": _num(det.get("map50_95")), "map50": _num(det.get("map50")),
                     "wins": wins, "comparisons": total, "glare_ok": ok, "fuse_ms": _num(fuse), "why": why})
    eligible = [r for r in rows if r["glare_ok"]]
    best_map = max((r["map50_95"] for r in eligible if not math.isnan(r["map50_95"])), default=math.nan)

    def key(r: dict[str, Any]) -> tuple:
        tied = math.isnan(best_map) or (not math.isnan(r["map50_95"]) and r["map50_95"] >= best_map - TIE)
        fuse = r["fuse_ms"] if not math.isnan(r["fuse_ms"]) else math.inf
        return (not r["glare_ok"], not tied, -r["wins"], fuse, r["variant"])

    rows.sort(key=key)
    chosen = rows[0]["variant"] if rows and rows[0]["glare_ok"] else None
    rule = ("candidates (not average/max/laplacian) that suppress glare where measured (GlareY below max, GlareC "
            f"above max), ranked by detection mAP@0.5:0.95 (ties within {TIE}: more wins over the Laplacian baseline "
            "on EN, SD, SF, AG, VIF, Qabf, then the cheaper fusion)")
    return {"variant": chosen, "rule": rule, "candidates": rows}


def choice_rows(choice: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and text rows of the decision, for the report's tables."""
    cols = ["variant", "mAP@0.5:0.95", "mAP@0.5", "wins vs laplacian", "glare", "fuse p50 (ms)", "decision"]
    def f(x: float | None, d: int = 3) -> str:
        return "–" if x is None or math.isnan(x) else f"{x:.{d}f}"

    out = []
    for r in choice.get("candidates") or []:
        chosen = r["variant"] == choice.get("variant")
        decision = "default" if chosen else ("" if r["glare_ok"] else r["why"])
        out.append([r["variant"], f(r["map50_95"]), f(r["map50"]), f"{r['wins']}/{r['comparisons']}",
                    "ok" if r["glare_ok"] else "keeps glare", f(r["fuse_ms"], 1), decision])
    return cols, out
