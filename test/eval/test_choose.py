"""The default-variant rule of eval/choose.py on hand-made reports."""

from __future__ import annotations

from ivfusion_ros.eval.choose import choice_rows, choose_default


def _fm(**m: float) -> dict:
    return {"fusion_metrics": m}


def _report(det: dict[str, float], night: dict[str, dict], day: dict[str, dict] | None = None) -> dict:
    variants = {v: {"detection": {"map50_95": m, "map50": m + 0.3}, "latency_ms": {"fuse": {"p50": 10.0}}}
                for v, m in det.items()}
    datasets = [{"name": "night", "variants": night}]
    if day is not None:
        datasets.append({"name": "day", "variants": day})
    return {"variants": variants, "datasets": datasets}


GLARE_MAX = {"GlareY": 150.0, "GlareC": 2.0}
LAP = {"EN": 6.0, "SD": 30.0, "SF": 9.0, "AG": 3.0, "VIF": 1.0, "Qabf": 0.6}


def test_best_detection_among_glare_suppressing_candidates_wins() -> None:
    night = {
        "max": _fm(**GLARE_MAX, **LAP),
        "laplacian": _fm(GlareY=110.0, GlareC=8.0, **LAP),
        "keeps": _fm(GlareY=152.0, GlareC=2.5, **LAP),  # best detection, but keeps the headlights
        "good": _fm(GlareY=90.0, GlareC=14.0, **LAP),
        "weak": _fm(GlareY=80.0, GlareC=15.0, **LAP),
    }
    choice = choose_default(_report({"max": 0.5, "laplacian": 0.4, "keeps": 0.45, "good": 0.40, "weak": 0.30}, night))
    assert choice["variant"] == "good"
    assert [r["variant"] for r in choice["candidates"]] == ["good", "weak", "keeps"]  # baselines are no candidates
    keeps = choice["candidates"][-1]
    assert not keeps["glare_ok"] and "keeps glare on night" in keeps["why"]
    cols, rows = choice_rows(choice)
    assert rows[0][-1] == "default" and rows[-1][4] == "keeps glare" and len(cols) == len(rows[0])


def test_ties_in_detection_go_to_more_wins_over_laplacian_then_the_cheaper() -> None:
    better = {k: v * 1.1 for k, v in LAP.items()}
    worse = {k: v * 0.9 for k, v in LAP.items()}
    night = {"laplacian": _fm(**LAP), "a": _fm(**worse), "b": _fm(**better)}
    day = {"laplacian": _fm(**LAP), "a": _fm(**better), "b": _fm(**better)}
    choice = choose_default(_report({"a": 0.402, "b": 0.400}, night, day))  # 0.002 apart: a tie
    assert choice["variant"] == "b"
    assert {r["variant"]: (r["wins"], r["comparisons"]) for r in choice["candidates"]} == {"a": (6, 12), "b": (12, 12)}
    clear = choose_default(_report({"a": 0.42, "b": 0.40}, night, day))  # not a tie: detection decides
    assert clear["variant"] == "a"


def test_no_light_effects_measured_passes_the_gate_and_nothing_eligible_gives_none() -> None:
    choice = choose_default(_report({"a": 0.3}, {"laplacian": _fm(**LAP), "a": _fm(**LAP)}))
    assert choice["variant"] == "a" and choice["candidates"][0]["why"] == "no light effects measured"
    night = {"max": _fm(**GLARE_MAX), "a": _fm(GlareY=160.0, GlareC=1.0)}
    assert choose_default(_report({"a": 0.3}, night))["variant"] is None
