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
from tasks.evaluate.figures import ABSENT, FIGURES, VS_CHAMPION, Evaluation, Judge, MissingFigure, lookup
from tasks.paths import Paths
from tasks.release import next_round
from tasks.release.promote import audit_tags
from tasks.release.report import run_report, stage_result

# where a planted canary must not be: every output but the raw corpus it was planted in (data/ingested and its DVC
# cache copy), the MLflow store and artifacts, the fetched champion, vLLM's and Prefect's logs and databases
SCANNED = (Paths.data, Path("mlruns"), Paths.champion_cache, LOG_DIR, Path(".prefect"))


def check_gates(cfg: GatesConfig, ev: Evaluation, quantization: dict, smoke: dict) -> list[dict]:
    """Each ratio compares like with like: the same dtype and code path on both sides (see tasks/serve/quantize.py)."""
    rows = [
        ("DPO ppl vs base", ev.ppl.dpo / ev.ppl.base, "<=", cfg.max_ppl_ratio_vs_base),
        ("quantized ppl vs merged", quantization["ppl_ratio"], "<=", cfg.max_quant_ppl_ratio),
        ("served ppl vs quantized", ev.ppl.served / quantization["quantized_ppl"], "<=", cfg.max_served_ppl_ratio),
        ("preference accuracy", ev.pref_accuracy, ">=", cfg.min_pref_accuracy),
        ("ROUGE-L", ev.rouge_l, ">=", cfg.min_rouge_l),
        ("failed load-test requests", ev.serving.requests_failed, "<=", 0),
        ("smoke test answered", int(bool(smoke.get("smoke_answer", "").strip())), ">=", 1),
    ]
    return [_gate(*row) for row in rows]


def _gate(name: str, value: float, op: str, limit: float) -> dict:
    return {"gate": name, "value": round(value, 4), "op": op, "limit": limit,
            "passed": value <= limit if op == "<=" else value >= limit}


def _skipped(name: str, reason: str) -> dict:
    """A gate that could not be decided: shown in the report with its reason, and it does not block."""
    return {"gate": name, "value": None, "op": "", "limit": None, "passed": True, "skipped": reason}


def compare_with_champion(cfg: GatesConfig, ev: Evaluation) -> list[dict]:
    """One gate per figure the schema compares (figures.VS_CHAMPION): a ratio for lower-is-better figures, a
    difference for scores, and the judge's win rate against 0.5 (a tie) when its calibration earns it. Empty before
    the first champion. A figure this run measured must be there on both sides (the schema sees to it); one it did
    not measure (its section off in params) has no gate."""
    if ev.champion is None:
        return []
    rows = []
    for figure in VS_CHAMPION:
        ours, theirs, limit = lookup(ev, figure.key), lookup(ev.champion, figure.key), getattr(
            cfg.vs_champion, figure.vs_champion)
        if ours is ABSENT or theirs is ABSENT:
            continue
        name, row = f"{figure.label} vs champion", {"figure": figure.label, "candidate": ours, "champion": theirs}
        if ours is None or theirs is None:
            rows.append(_skipped(name, figure.none_means) | row)
        elif figure.better == "lower":
            rows.append(_gate(name, ours / theirs, "<=", limit) | row)
        else:
            rows.append(_gate(name, ours - theirs, ">=", -limit) | row)
    return rows + _judge_gate(cfg, ev.judge) + _judge_gate(cfg, ev.reward_judge, "reward judge")


def _judge_gate(cfg: GatesConfig, judge: Judge | None, label: str = "judge") -> list[dict]:
    """A judge's win rate against 0.5, when its calibration passes (the LLM judge, the reward model: same limits)."""
    if judge is None or not judge.opponent.startswith("champion"):
        return []
    name, row = f"{label} win rate vs champion", {"figure": f"{label} win rate", "candidate": judge.win_rate,
                                                  "champion": 0.5}
    accuracy = judge.calibration.accuracy
    if accuracy is None or accuracy < cfg.min_judge_calibration:
        return [_skipped(name, f"{label} calibration accuracy {accuracy} < gates.min_judge_calibration "
                               f"{cfg.min_judge_calibration}: it cannot tell planted better replies") | row]
    if judge.win_rate is None:
        return [_skipped(name, "no verdict parsed") | row]
    return [_gate(name, judge.win_rate, ">=", 0.5 - cfg.vs_champion.max_judge_win_rate_drop) | row]


def eval_summary(ev: Evaluation) -> dict[str, str]:
    """The evaluation's headline as registry-version tags (figures with a `tag`): the registry alone says how good
    a version was."""
    found = {f.tag: lookup(ev, f.key) for f in FIGURES if f.tag}
    return {tag: str(value) for tag, value in found.items() if value is not ABSENT and value is not None}


def training_tags() -> dict[str, str]:
    """What made the model, on its registry version: the preference method (`align_method`: dpo, orpo, kto, simpo,
    grpo, rloo) and the reward model's held-out pairwise accuracy."""
    wanted = {"align_method": stage_result("dpo").get("method"),
              "reward_model_accuracy": stage_result("reward").get("held_out_accuracy")}
    return {tag: str(value) for tag, value in wanted.items() if value is not None}


def register(cfg: GatesConfig, model_name: str, model_dir: Path = Paths.quantized, metrics_file: Path = Paths.metrics,
             quantize_metrics: Path = Paths.stage_results / "quantize.json", smoke_test: Path = Paths.smoke_test,
             out: Path = Paths.registry_report, report_md: Path = Paths.run_report,
             plot: Path = Paths.vs_champion_plot, stage_order: Sequence[str] = (), canaries: list[Canary] = (),
             scanned: Sequence[Path] = SCANNED, adapter: Path = Paths.dpo_adapter,
             base_model: Path = Paths.base_model, held_out: Path = Paths.sft_test) -> dict:
    ev = Evaluation.model_validate_json(metrics_file.read_text())
    quantization = json.loads(quantize_metrics.read_text())
    smoke = json.loads(smoke_test.read_text())
    comparisons = compare_with_champion(cfg, ev)
    measured = ev.champion.version if ev.champion else None
    if comparisons:
        drawn = [g for g in comparisons if g["candidate"] is not None and g["champion"] is not None]
        plots.versus({g["figure"]: g["candidate"] for g in drawn}, {g["figure"]: g["champion"] for g in drawn}, plot,
                     f"Candidate vs champion v{measured}, same rows and CPU")
    current = tracking.champion(model_name) if tracking.active() else None
    if current and current["version"] != measured:   # another run was promoted after evaluate measured this one
        comparisons.append({"gate": "champion unchanged since evaluate", "value": current["version"], "op": "==",
                            "limit": measured, "passed": False})
    gates = check_gates(cfg, ev, quantization, smoke) + comparisons
    if canaries:
        if ev.canaries is None:
            raise MissingFigure(f"{len(canaries)} canaries planted, and evaluate probed none: re-run evaluate")
        found = scan(scanned, canaries, skip=[Paths.ingested.parent])
        gates += [_gate("canary secrets in outputs, stores and logs", len(found), "<=", 0) | {"files": sorted(found)},
                  _gate("canaries the served model completed", ev.canaries.exposed, "<=", 0)]
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
                **eval_summary(ev), **training_tags()}
        tags |= {"compared_with_champion": str(current["version"])} if current else {}
        if alias == "champion":   # the audit trail `promote`/`rollback` continue; previous_champion: the rollback
            tags |= audit_tags("register", "all gates passed", current and current["version"])
        next_round.keep(adapter, base_model, held_out)
        result |= tracking.register_model(model_name, model_dir, alias, why, tags)
    write_json(out, result)
    report_md.write_text(run_report(result, ev.model_dump() | {"quantization": quantization}, smoke, stage_order))
    return {"alias": alias, "promoted": int(alias == "champion"), "gates_passed": len(gates) - len(failed) - len(skipped), "gates_failed": len(failed),
            "gates_skipped": len(skipped), "version": result.get("version", 0)}
