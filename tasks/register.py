"""Stage 10: register the served checkpoint in MLflow; alias `champion` only if every gate passes, else `challenger`.

Gates come from params.yaml (`gates`). The human-readable run report is written here, because this is the stage
that knows the verdict and why.
"""
from __future__ import annotations

import json
from pathlib import Path

from tasks import tracking
from tasks.config import GatesConfig, Paths
from tasks.jsonl import write_json


def check_gates(cfg: GatesConfig, metrics: dict, quantization: dict, deployment: dict) -> list[dict]:
    """Each ratio compares like with like: the same dtype and code path on both sides (see tasks/quantize.py)."""
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
             out: Path = Paths.registry_report, report_md: Path = Paths.run_report) -> dict:
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
    report_md.write_text(run_report(result, metrics | {"quantization": quantization}, deployment))
    return {"alias": alias, "gates_passed": len(gates) - len(failed), "gates_failed": len(failed),
            "version": result.get("version", 0)}


def run_report(result: dict, metrics: dict, deployment: dict) -> str:
    from tasks.stages import STAGES

    timed = [(s.name, Paths.stage_metrics / f"{s.name}.json") for s in STAGES if s.name != "register"]
    stage_times = {name: json.loads(path.read_text()).get("duration_s") for name, path in timed if path.exists()}
    clean = json.loads(Paths.clean_report.read_text()) if Paths.clean_report.exists() else {}
    lines = [f"# Run report: **{result['alias']}**", "", f"Verdict: {result['why']}.", ""]
    if "version" in result:
        lines += [f"Registered as `{result['uri']}` (version {result['version']}).", ""]
    lines += ["| gate | value | limit | passed |", "|---|---:|---:|:---:|"]
    lines += [f"| {g['gate']} | {g['value']} | {g['op']} {g['limit']} | {'yes' if g['passed'] else '**no**'} |"
              for g in result["gates"]]
    ppl, serving = metrics["ppl"], metrics["serving"]
    quant = metrics["quantization"]
    lines += ["", "## Model", "", "| model | held-out ppl |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in ppl.items()]
    lines += ["", "base/SFT/DPO in transformers (fp32 on a CPU); served = the quantized checkpoint scored by vLLM. "
              f"Quantization, one fp32 forward before and after: {quant['merged_ppl']} -> {quant['quantized_ppl']} "
              f"(x{quant['ppl_ratio']}), {quant['merged_mb']} -> {quant['quantized_mb']} MB."]
    lines += ["", f"Preference accuracy (held-out pairs): {metrics['pref_accuracy']}; ROUGE-L of served answers: "
              f"{metrics['rouge_l']}.", "",
              f"Serving (vLLM, concurrency {serving['concurrency']}): TTFT median {serving['ttft_median_ms']} ms, "
              f"TPOT median {serving['tpot_median_ms']} ms, {serving['output_tok_s']} output tok/s, "
              f"{serving['requests_failed']} failed requests. Smoke answer: \"{deployment.get('smoke_answer', '')}\"",
              ""]
    if clean:
        lines += ["## Data", "", f"{clean['rows_in']} conversations in, {clean['rows_kept']} kept; dropped: "
                  + ", ".join(f"{k} {v}" for k, v in clean["dropped_by_reason"].items())
                  + "; PII replaced: " + (", ".join(f"{k} {v}" for k, v in clean["pii_by_type"].items()) or "none")
                  + ".", ""]
    if stage_times:
        lines += ["## Stage times (last run of each)", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in stage_times.items()]
        lines += [f"| **total** | {round(sum(v for v in stage_times.values() if v), 1)} |"]
    return "\n".join(lines) + "\n"
