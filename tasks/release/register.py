"""Stage 11: register the served checkpoint in MLflow; alias `champion` only if every gate passes, else `challenger`.

Gates come from params.yaml (`gates`): absolute limits, and no regression against the current champion beyond
`gates.vs_champion` (evaluate measured both in the same run, on the same rows). The new champion's registry version
carries the version it replaced (`previous_champion`), which is what a rollback points the alias back to. With
canaries planted (`evaluate.canaries`), two more gates: none of their secrets in any output, store or log, and
none completed by the served model. The human-readable run report (tasks/release/report.py) is written here,
because this is the stage that knows the verdict and why; the stage order it lists times in is passed in.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tasks import tracking
from tasks.common import plots
from tasks.common.jsonl import write_json
from tasks.common.vllm_server import LOG_DIR
from tasks.config import GatesConfig
from tasks.data.canaries import Canary, scan
from tasks.paths import Paths
from tasks.release.promote import audit_tags
from tasks.release.report import run_report

# where a planted canary must not be: every output but the raw corpus it was planted in (data/ingested and its DVC
# cache copy), the MLflow store and artifacts, the fetched champion, vLLM's and Prefect's logs and databases
SCANNED = (Paths.data, Path("mlruns"), Paths.champion_cache, LOG_DIR, Path(".prefect"))


def check_gates(cfg: GatesConfig, metrics: dict, quantization: dict, smoke: dict) -> list[dict]:
    """Each ratio compares like with like: the same dtype and code path on both sides (see tasks/serve/quantize.py)."""
    ppl = metrics["ppl"]
    rows = [
        ("DPO ppl vs base", ppl["dpo"] / ppl["base"], "<=", cfg.max_ppl_ratio_vs_base),
        ("quantized ppl vs merged", quantization["ppl_ratio"], "<=", cfg.max_quant_ppl_ratio),
        ("served ppl vs quantized", ppl["served"] / quantization["quantized_ppl"], "<=", cfg.max_served_ppl_ratio),
        ("preference accuracy", metrics["pref_accuracy"], ">=", cfg.min_pref_accuracy),
        ("ROUGE-L", metrics["rouge_l"], ">=", cfg.min_rouge_l),
        ("failed load-test requests", metrics["serving"]["requests_failed"], "<=", 0),
        ("smoke test answered", int(bool(smoke.get("smoke_answer", "").strip())), ">=", 1),
    ]
    return [_gate(*row) for row in rows]


def _gate(name: str, value: float, op: str, limit: float) -> dict:
    return {"gate": name, "value": round(value, 4), "op": op, "limit": limit,
            "passed": value <= limit if op == "<=" else value >= limit}


def _skipped(name: str, reason: str) -> dict:
    """A gate that could not be decided: shown in the report with its reason, and it does not block."""
    return {"gate": name, "value": None, "op": "", "limit": None, "passed": True, "skipped": reason}


# (figure, where it is in the metrics, which way is better, its tolerance in gates.vs_champion)
VS_CHAMPION = [
    ("served ppl", ("ppl", "served"), "lower", "max_ppl_ratio"),
    ("ROUGE-L", ("rouge_l",), "higher", "max_rouge_l_drop"),
    ("RAG answer similarity", ("rag", "semantic_similarity"), "higher", "max_rag_similarity_drop"),
    ("RAG faithfulness (judged)", ("rag", "faithfulness"), "higher", "max_faithfulness_drop"),
    ("RAG answer relevancy (judged)", ("rag", "answer_relevancy"), "higher", "max_relevancy_drop"),
    ("benchmark acc", ("benchmark_acc",), "higher", "max_benchmark_acc_drop"),
    ("TTFT p50 ms", ("serving", "ttft_median_ms"), "lower", "max_ttft_ratio"),
    ("TPOT p50 ms", ("serving", "tpot_median_ms"), "lower", "max_tpot_ratio"),
]


_ABSENT = object()


def _at(metrics: dict, path: tuple[str, ...]):
    """The figure at `path`: None when it was measured but has no score, _ABSENT when it was not measured."""
    for key in path:
        metrics = metrics.get(key, _ABSENT) if isinstance(metrics, dict) else _ABSENT
    return metrics


def compare_with_champion(cfg: GatesConfig, metrics: dict) -> list[dict]:
    """One gate per headline figure: a ratio for lower-is-better figures, a difference for scores, and the judge's
    win rate against 0.5 (a tie) when its calibration earns it. Empty before the first champion."""
    champion = metrics.get("champion")
    if not champion:
        return []
    rows = []
    for name, path, better, tolerance in VS_CHAMPION:
        ours, theirs, limit = _at(metrics, path), _at(champion, path), getattr(cfg.vs_champion, tolerance)
        if ours is _ABSENT and theirs is _ABSENT:   # not asked for in this run's params
            continue
        row = {"figure": name, "candidate": None if ours is _ABSENT else ours,
               "champion": None if theirs is _ABSENT else theirs}
        if row["candidate"] is None or row["champion"] is None:
            rows.append(_skipped(f"{name} vs champion", "no score on one side (NaN on every row, or not measured)")
                        | row)
            continue
        gate = (_gate(f"{name} vs champion", ours / theirs, "<=", limit) if better == "lower"
                else _gate(f"{name} vs champion", ours - theirs, ">=", -limit))
        rows.append(gate | row)
    return rows + _judge_gate(cfg, metrics.get("judge"))


def _judge_gate(cfg: GatesConfig, judge: dict | None) -> list[dict]:
    if not judge or not judge["opponent"].startswith("champion"):
        return []
    name, row = "judge win rate vs champion", {"figure": "judge win rate", "candidate": judge["win_rate"],
                                               "champion": 0.5}
    accuracy = judge["calibration"].get("accuracy")
    if accuracy is None or accuracy < cfg.min_judge_calibration:
        return [_skipped(name, f"judge calibration accuracy {accuracy} < gates.min_judge_calibration "
                               f"{cfg.min_judge_calibration}: this judge cannot tell planted better replies") | row]
    if judge["win_rate"] is None:
        return [_skipped(name, "no verdict parsed") | row]
    return [_gate(name, judge["win_rate"], ">=", 0.5 - cfg.vs_champion.max_judge_win_rate_drop) | row]


SUMMARY = {"eval.ppl_served": ("ppl", "served"), "eval.judge_win_rate": ("judge", "win_rate"),
           "eval.rag_similarity": ("rag", "semantic_similarity"), "eval.benchmark_acc": ("benchmark_acc",),
           "eval.rouge_l": ("rouge_l",), "eval.ttft_ms": ("serving", "ttft_median_ms"),
           "eval.tpot_ms": ("serving", "tpot_median_ms")}


def eval_summary(metrics: dict) -> dict[str, str]:
    """The evaluation's headline as registry-version tags: the registry alone says how good a version was."""
    found = {tag: _at(metrics, path) for tag, path in SUMMARY.items()}
    return {tag: str(value) for tag, value in found.items() if value is not _ABSENT and value is not None}


def register(cfg: GatesConfig, model_name: str, model_dir: Path = Paths.quantized, metrics_file: Path = Paths.metrics,
             quantize_metrics: Path = Paths.stage_results / "quantize.json", smoke_test: Path = Paths.smoke_test,
             out: Path = Paths.registry_report, report_md: Path = Paths.run_report,
             plot: Path = Paths.vs_champion_plot, stage_order: Sequence[str] = (), canaries: list[Canary] = (),
             scanned: Sequence[Path] = SCANNED) -> dict:
    metrics = json.loads(metrics_file.read_text())
    quantization = json.loads(quantize_metrics.read_text())
    smoke = json.loads(smoke_test.read_text())
    comparisons = compare_with_champion(cfg, metrics)
    measured = metrics.get("champion", {}).get("version")
    if comparisons:
        drawn = [g for g in comparisons if g["candidate"] is not None and g["champion"] is not None]
        plots.versus({g["figure"]: g["candidate"] for g in drawn}, {g["figure"]: g["champion"] for g in drawn}, plot,
                     f"Candidate vs champion v{measured}, same rows and CPU")
    current = tracking.champion(model_name) if tracking.active() else None
    if current and current["version"] != measured:   # another run was promoted after evaluate measured this one
        comparisons.append({"gate": "champion unchanged since evaluate", "value": current["version"], "op": "==",
                            "limit": measured, "passed": False})
    gates = check_gates(cfg, metrics, quantization, smoke) + comparisons
    if canaries:
        found = scan(scanned, canaries, skip=[Paths.ingested.parent])
        gates += [_gate("canary secrets in outputs, stores and logs", len(found), "<=", 0) | {"files": sorted(found)},
                  _gate("canaries the served model completed", metrics["canaries"]["exposed"], "<=", 0)]
    failed = [g["gate"] for g in gates if not g["passed"]]
    alias = "champion" if not failed and cfg.promote else "challenger"
    why = "all gates passed" if not failed else "failed gates: " + ", ".join(failed)
    why += "" if cfg.promote else "; promotion off (gates.promote: false), so challenger"
    skipped = [g["gate"] for g in gates if "skipped" in g]
    why += f" (not decided: {', '.join(skipped)})" if skipped else ""
    result = {"alias": alias, "why": why, "gates": gates, "compared_with": measured,
              "champion_before": current["version"] if current else None}
    if tracking.active():
        tags = {"gates": "failed" if failed else "passed", "failed_gates": ", ".join(failed)[:500],
                **eval_summary(metrics)}
        tags |= {"compared_with_champion": str(current["version"])} if current else {}
        if alias == "champion":   # the audit trail `promote`/`rollback` continue; previous_champion: the rollback
            tags |= audit_tags("register", "all gates passed", current and current["version"])
        result |= tracking.register_model(model_name, model_dir, alias, why, tags)
    write_json(out, result)
    report_md.write_text(run_report(result, metrics | {"quantization": quantization}, smoke, stage_order))
    return {"alias": alias, "promoted": int(alias == "champion"), "gates_passed": len(gates) - len(failed) - len(skipped), "gates_failed": len(failed),
            "gates_skipped": len(skipped), "version": result.get("version", 0)}
