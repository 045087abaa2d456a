"""The run report: one short markdown page per pipeline run, saying what was decided and on which figures."""
from __future__ import annotations

import json
from collections.abc import Sequence

from tasks.evaluate.figures import JUDGED
from tasks.paths import Paths


def run_report(result: dict, metrics: dict, smoke: dict, stage_order: Sequence[str] = ()) -> str:
    """The verdict and the gates first, then the model, serving, data and stage-time figures behind them."""
    timed = [(name, Paths.stage_results / f"{name}.json") for name in stage_order if name != "register"]
    stage_times = {name: json.loads(path.read_text()).get("duration_s") for name, path in timed if path.exists()}
    clean = json.loads(Paths.clean_report.read_text()) if Paths.clean_report.exists() else {}
    pairs, reward = (stage_result(name) for name in ("pairs", "reward"))
    lines = [f"# Run report: **{result['alias']}**", "", f"Verdict: {result['why']}.", ""]
    if "version" in result:
        lines += [f"Registered as `{result['uri']}` (version {result['version']}).", ""]
    lines += ["| gate | value | limit | passed |", "|---|---:|---:|:---:|"]
    lines += [f"| {g['gate']} | {g['value']} | {g['op']} {g['limit']} | {'yes' if g['passed'] else '**no**'} |"
              for g in result["gates"] if "figure" not in g]   # the champion comparisons: their own table
    lines += [f"\nCanary found in: {', '.join(g['files'])}" for g in result["gates"] if g.get("files")]
    lines += ["", "## Against the champion", ""] + _versus_champion(result)
    ppl, serving = metrics["ppl"], metrics["serving"]
    quant = metrics["quantization"]
    lines += ["", "## Model", "", "| model | held-out ppl |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in ppl.items() if v is not None]
    lines += ["", "base/SFT/DPO in transformers (fp32 on a CPU); served = the quantized checkpoint scored by vLLM. "
              f"Quantization, one fp32 forward before and after: {quant['merged_ppl']} -> {quant['quantized_ppl']} "
              f"(x{quant['ppl_ratio']}), {quant['merged_mb']} -> {quant['quantized_mb']} MB."] + variants_table(quant)
    likelihood = metrics.get("pref_likelihood_accuracy", {})
    lines += ["", f"Preference accuracy (held-out pairs, DPO implicit reward): {metrics['pref_accuracy']}; chosen "
              f"preferred by likelihood: SFT {likelihood.get('sft')} (the baseline) -> DPO {likelihood.get('dpo')}. "
              f"ROUGE-L of served answers: {metrics['rouge_l']}.", ""] + _reward(reward) + [
              f"Serving (vLLM, concurrency {serving['concurrency']}): TTFT median {serving['ttft_median_ms']} ms, "
              f"TPOT median {serving['tpot_median_ms']} ms, {serving['output_tok_s']} output tok/s, "
              f"{serving['requests_failed']} failed requests{_prometheus(serving.get('vllm_metrics', {}))}. "
              f"Smoke answer: \"{smoke.get('smoke_answer', '')}\"", ""]
    if metrics.get("rag"):
        lines += ["## RAG on the served model", ""] + _rag(metrics["rag"]) + [""]
    if metrics.get("judge"):
        lines += ["## LLM judge", ""] + _judge(metrics["judge"]) + [""]
    if metrics.get("reward_judge"):
        lines += ["## Two judges, side by side", ""] + _judges(metrics["judge"], metrics["reward_judge"],
                                                                result["gates"]) + [""]
    if metrics.get("benchmark"):
        lines += ["## Benchmark", ""] + _benchmark(metrics["benchmark"]) + [""]
    if clean:
        lines += ["## Data", "", f"{clean['rows_in']} conversations in, {clean['rows_kept']} kept; dropped: "
                  + ", ".join(f"{k} {v}" for k, v in clean["dropped_by_reason"].items())
                  + "; PII replaced: " + (", ".join(f"{k} {v}" for k, v in clean["pii_by_type"].items()) or "none")
                  + ".", ""]
    lines += _feedback_round(stage_result("ingest"), clean, stage_result("sft"))
    if pairs:
        lines += [f"Preference pairs ({pairs['source']}): {pairs['pref_train']} train, {pairs['pref_test']} held out; "
                  f"mean length chosen {pairs['mean_chosen_tokens']} vs rejected {pairs['mean_rejected_tokens']} "
                  "tokens.", ""]
    if metrics.get("time_s"):
        lines += ["## Evaluation time by part", "", "| part | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in metrics["time_s"].items()] + [""]
    if stage_times:
        lines += ["## Stage times (last run of each)", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in stage_times.items()]
        lines += [f"| **total** | {round(sum(v for v in stage_times.values() if v), 1)} |"]
    return "\n".join(lines) + "\n"


def stage_result(stage: str) -> dict:
    """What a stage returned (data/stages/<stage>.json), or {} before it ran."""
    path = Paths.stage_results / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _feedback_round(ingest: dict, clean: dict, sft: dict) -> list[str]:
    """What served users sent this round (sources of kind feedback: tasks/data/feedback.py) and what came of it."""
    lines = []
    for name, counts in ingest.get("by_source", {}).items():
        if "feedback" not in counts:
            continue
        kinds = ", ".join(f"{n} {kind}" for kind, n in counts["feedback"].items()) or "none"
        cleaned = clean.get("by_source", {}).get(name, {})
        dropped = ", ".join(f"{k} {v}" for k, v in cleaned.get("dropped_by_reason", {}).items()) or "none"
        lines += [f"Feedback from serving (`{name}`): {kinds}; {counts['rows_kept']} became training conversations, "
                  f"{cleaned.get('rows_kept', 0)} kept by clean (dropped: {dropped}). SFT started from "
                  f"{sft.get('init_from', 'base')}.", ""]
    return lines


def _reward(reward: dict) -> list[str]:
    """The reward model on the same held-out pairs, and how much of its score is reply length."""
    if not reward:
        return []
    return [f"Reward model (tasks/train/reward.py, {reward['steps']} steps): held-out pairwise accuracy "
            f"{reward['held_out_accuracy']} on {reward['held_out_pairs']} pairs, mean margin "
            f"{reward['held_out_margin_mean']}; correlation of reward with reply length "
            f"{reward['reward_length_correlation']} (near 0: it does not pay for length).", ""]


def _versus_champion(result: dict) -> list[str]:
    rows = [g for g in result["gates"] if "figure" in g]
    if not rows:
        return ["No champion yet: this is the first registered model, so only the absolute gates above decide."]
    lines = [f"Both served and measured in this run, on the same held-out rows and CPU (champion: version "
             f"{result['compared_with']}). Ratio for latency and perplexity, difference for scores.", "",
             "| figure | candidate | champion | ratio / diff | limit | passed |", "|---|---:|---:|---:|---:|:---:|"]
    lines += [f"| {g['figure']} | {g['candidate']} | {g['champion']} | {g['value']} | {g['op']} {g['limit']} | "
              + (f"skipped: {g['skipped']}" if "skipped" in g else "yes" if g["passed"] else "**no**") + " |"
              for g in rows]
    return lines


def _judge(judge: dict) -> list[str]:
    cal = judge["calibration"]
    lines = [f"Judge: {judge['judge']}. Candidate vs {judge['opponent']} on {judge['n']} held-out prompts, each judged "
             f"in both orders (a verdict that flips with the order is a tie): win rate **{judge['win_rate']}** "
             f"(95% interval {judge['ci95']}); {judge['wins']} wins, {judge['ties']} ties, {judge['losses']} losses, "
             f"{judge['failed']} unparsed. Mean answer length (characters; judges favour longer answers): candidate "
             f"{judge['mean_answer_chars']['candidate']}, {judge['opponent']} "
             f"{judge['mean_answer_chars']['opponent']}.",
             "", f"Calibration on {cal['pairs']} planted pairs whose better reply is known: accuracy "
             f"**{cal['accuracy']}**, order-flip rate {cal.get('order_flip_rate')}, parse-failure rate "
             f"{cal.get('parse_failure_rate')}. A judge near 0.5 here picks by position, not by quality: its win rate "
             "is then reported but does not gate."]
    if cal.get("accuracy_by_kind"):
        lines += ["", "| planted worse reply | judge accuracy |", "|---|---:|"]
        lines += [f"| {kind} | {acc} |" for kind, acc in cal["accuracy_by_kind"].items()]
    return lines


def _judges(llm: dict, reward: dict, gates: list[dict]) -> list[str]:
    """The LLM judge and the reward model on the same answers, with the calibration that says which to believe."""
    def gating(label: str) -> str:
        found = [g for g in gates if g["gate"] == f"{label} win rate vs champion"]
        if not found:
            return "no champion yet" if llm["opponent"] == "base" else "-"
        return f"skipped: {found[0]['skipped']}" if "skipped" in found[0] else "yes"

    def column(judge: dict) -> list[str]:
        cal = judge["calibration"]
        return [f"**{judge['win_rate']}** {judge['ci95']}", f"{judge['wins']} / {judge['ties']} / {judge['losses']}",
                f"**{cal['accuracy']}** on {cal['pairs']}"] + [str(cal["accuracy_by_kind"].get(k)) for k in kinds]

    kinds = list(llm["calibration"]["accuracy_by_kind"] or reward["calibration"]["accuracy_by_kind"])
    names = [f"win rate vs {llm['opponent']} (95% interval)", "wins / ties / losses", "calibration accuracy"] + \
        [f"calibration: {kind}" for kind in kinds]
    rows = [f"| {n} | {a} | {b} |" for n, a, b in zip(names, column(llm), column(reward))]
    return ["The LLM judge reads both answers and picks one; the reward model scores each alone (higher wins). Each "
            "gates only when its calibration on planted pairs reaches gates.min_judge_calibration.", "",
            "| | LLM judge | reward model |", "|---|---:|---:|", *rows,
            f"| gates this run | {gating('judge')} | {gating('reward judge')} |"]


def _benchmark(bench: dict) -> list[str]:
    tasks = sorted({task for scores in bench.values() for task in scores})
    lines = ["lm-eval multiple choice: pick the true reply by log-likelihood (acc) and per byte (acc_norm); base, "
             "SFT and DPO in transformers, served = the quantized checkpoint through vLLM.", "",
             "| model | " + " | ".join(f"{t} acc | {t} acc_norm" for t in tasks) + " |",
             "|---|" + "---:|" * (2 * len(tasks))]
    return lines + [f"| {model} | " + " | ".join(f"{scores.get(t, {}).get('acc')} | {scores.get(t, {}).get('acc_norm')}"
                                                 for t in tasks) + " |" for model, scores in bench.items()]


def _rag(rag: dict) -> list[str]:
    names = {"recall_at_k": f"Recall@{rag['top_k']}", "mrr": "MRR", "ndcg_at_k": f"NDCG@{rag['top_k']}",
             "non_llm_context_recall": "context recall (ragas, non-LLM)",
             "non_llm_context_precision": "context precision (ragas, non-LLM)",
             "semantic_similarity": "answer similarity to reference (ragas, MiniLM)",
             "faithfulness": "faithfulness (ragas, LLM-judged)",
             "answer_relevancy": "answer relevancy (ragas, LLM-judged)",
             "context_precision": "context precision (ragas, LLM-judged)",
             "context_recall": "context recall (ragas, LLM-judged)"}
    lines = [f"{rag['questions']} questions over {rag['passages']} passages (MiniLM retrieval, top {rag['top_k']}).",
             *([f"LLM-judged metrics on the first {rag['judged_questions']} (`evaluate.judge.ragas_size`)."]
               if rag.get("judged_questions") is not None else []), "", "| metric | mean | NaN rate |", "|---|---:|---:|"]
    judged = rag.get("judged_questions") is not None
    return lines + [f"| {label} | {rag[key]} | {rag[f'{key}_nan_rate']} |" for key, label in names.items()
                    if key in rag and (judged or key not in JUDGED)]


def _prometheus(seen: dict) -> str:
    """What vLLM's own /metrics saw during the load test, where it was scraped."""
    if "e2e_s_p50" not in seen:
        return ""
    return (f"; vLLM's /metrics over the load: end-to-end p50/p99 {seen['e2e_s_p50']}/{seen['e2e_s_p99']} s, "
            f"queue p50 {seen.get('queue_s_p50', 'n/a')} s")


def variants_table(quant: dict) -> list[str]:
    """Each quantization measured (quantize.compare, quantize.gguf) beside the served one, against the merged model;
    where none was, where to switch them on (off by default: they cost most of the stage and none is served)."""
    variants = quant.get("variants", {})
    if len(variants) < 2:
        return ["", "Other quantizations were not measured. To compare them with the served one in this table, set "
                "`quantize.compare: [W4A16, W4A16-GPTQ]` and `quantize.gguf: Q8_0` (a GGUF file for llama.cpp) in "
                "params.yaml: about 3 minutes more on a 2-core CPU."]
    rows = [f"| {name}{' (served)' if name == quant.get('scheme') else ''} | {v['mb']} | {v['size_ratio']} | "
            f"{v['ppl']} | x{v['ppl_ratio']} |" for name, v in sorted(variants.items(), key=lambda kv: kv[1]["mb"])]
    return ["", "| quantization | MB | of merged | held-out ppl | vs merged |", "|---|---:|---:|---:|---:|",
            f"| merged (bf16) | {quant['merged_mb']} | 1.0 | {quant['merged_ppl']} | x1.0 |", *rows]

