"""Stage 10: register the served checkpoint in MLflow; alias `champion` only if every gate passes, else `challenger`.

Gates come from params.yaml (`gates`). The human-readable run report (tasks/release/report.py) is written here,
because this is the stage that knows the verdict and why; the stage order it lists times in is passed in.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tasks import tracking
from tasks.common.jsonl import write_json
from tasks.config import GatesConfig, Paths
from tasks.release.report import run_report


def check_gates(cfg: GatesConfig, metrics: dict, quantization: dict, deployment: dict) -> list[dict]:
    """Each ratio compares like with like: the same dtype and code path on both sides (see tasks/serve/quantize.py)."""
    ppl = metrics["ppl"]
    rows = [
        ("DPO ppl vs base", ppl["dpo"] / ppl["base"], "<=", cfg.max_ppl_ratio_vs_base),
        ("quantized ppl vs merged", quantization["ppl_ratio"], "<=", cfg.max_quant_ppl_ratio),
        ("served ppl vs quantized", ppl["served"] / quantization["quantized_ppl"], "<=", cfg.max_served_ppl_ratio),
        ("preference accuracy", metrics["pref_accuracy"], ">=", cfg.min_pref_accuracy),
        ("ROUGE-L", metrics["rouge_l"], ">=", cfg.min_rouge_l),
        ("failed load-test requests", metrics["serving"]["requests_failed"], "<=", 0),
        ("smoke test answered", int(bool(deployment.get("smoke_answer", "").strip())), ">=", 1),
    ]
    return [{"gate": name, "value": round(value, 4), "op": op, "limit": limit,
             "passed": value <= limit if op == "<=" else value >= limit} for name, value, op, limit in rows]


def register(cfg: GatesConfig, model_name: str, model_dir: Path = Paths.quantized, metrics_file: Path = Paths.metrics,
             quantize_metrics: Path = Paths.stage_metrics / "quantize.json", deploy_report: Path = Paths.deploy_report,
             out: Path = Paths.registry_report, report_md: Path = Paths.run_report,
             stage_order: Sequence[str] = ()) -> dict:
    metrics = json.loads(metrics_file.read_text())
    quantization = json.loads(quantize_metrics.read_text())
    deployment = json.loads(deploy_report.read_text())
    gates = check_gates(cfg, metrics, quantization, deployment)
    failed = [g["gate"] for g in gates if not g["passed"]]
    alias = "challenger" if failed else "champion"
    why = "all gates passed" if not failed else "failed gates: " + ", ".join(failed)
    result = {"alias": alias, "why": why, "gates": gates}
    if tracking.active():
        result |= tracking.register_model(model_name, model_dir, alias, why)
    write_json(out, result)
    report_md.write_text(run_report(result, metrics | {"quantization": quantization}, deployment, stage_order))
    return {"alias": alias, "gates_passed": len(gates) - len(failed), "gates_failed": len(failed),
            "version": result.get("version", 0)}
