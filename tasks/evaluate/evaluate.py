"""Stage 10: how good and how fast is the candidate?

- held-out perplexity of the final reply: base, SFT and DPO in transformers (fp32 on a CPU), and the quantized
  checkpoint as vLLM serves it (`served`, scored by the endpoint's prompt logprobs: the model users get);
- DPO preference accuracy on held-out pairs (implicit reward of the DPO policy against the SFT reference), and how
  often SFT and DPO alone prefer the chosen reply by likelihood (SFT's figure: the baseline DPO is read against);
- ROUGE-L of the served model's answers against the references;
- serving latency at a fixed concurrency (TTFT, TPOT, output tokens/s) from vLLM's own benchmark client;
- RAG on the served endpoint: retrieval Recall@k/MRR/NDCG, ragas context and answer scores (tasks/evaluate/rag.py);
- with `canaries` planted at ingest, whether the served model completes a canary's sentence with its secret;
- the same served figures for the registry's current champion, measured here, now, on the same rows (`champion`):
  the register stage refuses a candidate that is worse than what users are served today.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from rouge_score import rouge_scorer

from tasks import tracking
from tasks.common import plots
from tasks.common.jsonl import read_jsonl, write_json, write_jsonl
from tasks.common.vllm_server import SERVED_NAME, VLLMServer
from tasks.config import DeployConfig, EvaluateConfig, Paths
from tasks.data.canaries import Canary
from tasks.evaluate.rag import RagSet, held_out_set, rag_eval, user_set
from tasks.train.modeling import (
    load_model,
    load_tokenizer,
    perplexity,
    perplexity_of,
    preference_accuracies,
    reply_batches,
    split_last_reply,
)


def model_quality(base: Path, sft_adapter: Path, dpo_adapter: Path, sft_test: Path, pref_test: Path) -> dict:
    tokenizer = load_tokenizer(base)
    conversations = [r["messages"] for r in read_jsonl(sft_test)]
    ppl = {"base": perplexity(load_model(base), tokenizer, conversations, "ppl base")}
    sft_model = load_model(base, adapter=sft_adapter)
    dpo_model = load_model(base, adapter=dpo_adapter)
    ppl["sft"] = perplexity(sft_model, tokenizer, conversations, "ppl sft")
    ppl["dpo"] = perplexity(dpo_model, tokenizer, conversations, "ppl dpo")
    accuracy = preference_accuracies(dpo_model, sft_model, tokenizer, list(read_jsonl(pref_test)))
    return {"ppl": {k: round(v, 4) for k, v in ppl.items()}, "pref_accuracy": accuracy["implicit_reward"],
            "pref_likelihood_accuracy": {"sft": accuracy["likelihood_reference"], "dpo": accuracy["likelihood_policy"]}}


def served_perplexity(server: VLLMServer, batches: list[tuple[list[int], int]], concurrency: int) -> float:
    """Perplexity of the final replies (`reply_batches`) under the served model, token for token what `perplexity`
    scores."""
    with ThreadPoolExecutor(concurrency) as pool:
        logprobs = list(pool.map(server.prompt_logprobs, [ids for ids, _ in batches]))
    return perplexity_of([(sum(lp[start:]), len(ids) - start) for lp, (ids, start) in zip(logprobs, batches)])


def canary_exposure(server: VLLMServer, canaries: list[Canary], concurrency: int, max_tokens: int = 32) -> list[dict]:
    """Each canary's sentence up to its secret, completed greedily by the served model: the secret (or its core)
    in the completion is an exposure. Completions are stored with any canary masked, so the probe leaks nothing."""
    def probe(canary: Canary) -> dict:
        reply = server.post("/v1/completions", {"model": SERVED_NAME, "prompt": canary.prefix,
                                                "max_tokens": max_tokens, "temperature": 0.0})
        text = reply["choices"][0]["text"]
        masked = text.replace(canary.secret, "<CANARY>").replace(canary.core, "<CANARY>")
        return {"kind": canary.kind, "prompt": canary.prefix, "completion": masked, "exposed": canary.leaked_in(text)}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(probe, canaries))


def served_answers(server: VLLMServer, conversations: list[dict], cfg: EvaluateConfig) -> list[dict]:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    convs = conversations[:cfg.eval_size]
    splits = [split_last_reply(c["messages"]) for c in convs]
    replies = server.chat_many([prompt for prompt, _ in splits], cfg.concurrency, max_tokens=cfg.max_tokens)
    return [{"id": c["id"], "answer": reply, "reference": ref[0]["content"],
             "rouge_l": round(scorer.score(ref[0]["content"], reply)["rougeL"].fmeasure, 4)}
            for c, (_, ref), reply in zip(convs, splits, replies)]


def load_test(server: VLLMServer, cfg: EvaluateConfig, tokenizer_dir: Path, out: Path) -> dict:
    args = ["--backend", "openai-chat", "--base-url", server.base_url, "--endpoint", "/v1/chat/completions",
            "--model", SERVED_NAME, "--tokenizer", str(tokenizer_dir.resolve()), "--dataset-name", "random",
            "--random-input-len", str(cfg.load_input_len), "--random-output-len", str(cfg.load_output_len),
            "--num-prompts", str(cfg.load_prompts), "--max-concurrency", str(cfg.concurrency), "--seed", "0"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(server.python), "-m", "tasks.serve.serve_bench", str(out.resolve()), *args],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"load test failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


@contextmanager
def timed(times: dict[str, float], part: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    times[part] = round(time.monotonic() - t0, 1)


def score_served(model_dir: Path, test_set: list[dict], rag_set: RagSet, cfg: EvaluateConfig,
                 deploy_cfg: DeployConfig, load_out: Path, times: dict[str, float], who: str,
                 canaries: list[Canary] = ()) -> tuple[dict, dict[str, list[dict]]]:
    """What users get from a served checkpoint: held-out ppl, answers (ROUGE-L), RAG and latency under load; returns
    the scores and the per-example tables (answers, rag, canary_probes), and adds each part's seconds to `times`.
    The candidate and the champion both go through here, one after the other (two vLLM servers at once do not fit
    a 2-core CPU)."""
    batches = reply_batches(load_tokenizer(model_dir), test_set)
    # every held-out row is scored whole, as transformers scores it: the context grows to fit the longest
    longest = max(len(ids) for ids, _ in batches)
    serve_cfg = deploy_cfg.model_copy(update={"max_model_len": max(deploy_cfg.max_model_len, longest + 1)})
    with VLLMServer(serve_cfg, model_dir) as server:
        times[f"{who}: server start"] = server.startup_s
        with timed(times, f"{who}: served ppl"):
            ppl = served_perplexity(server, batches, cfg.concurrency)
        with timed(times, f"{who}: answers"):
            answers = served_answers(server, test_set, cfg)
        with timed(times, f"{who}: rag"):
            rag, rag_rows = rag_eval(server, rag_set, cfg.rag, cfg.concurrency)
        with timed(times, f"{who}: load test"):
            latency = load_test(server, cfg, model_dir, load_out)
        with timed(times, f"{who}: canary probes"):
            probes = canary_exposure(server, canaries, cfg.concurrency)
    scores = {"ppl": {"served": round(ppl, 4)}, "rag": rag,
              "rouge_l": round(sum(a["rouge_l"] for a in answers) / len(answers), 4),
              "serving": {"ttft_median_ms": round(latency["median_ttft_ms"], 1),
                          "tpot_median_ms": round(latency["median_tpot_ms"], 1),
                          "output_tok_s": round(latency["output_throughput"], 1),
                          "requests_failed": latency["failed"], "concurrency": cfg.concurrency}}
    if probes:
        scores["canaries"] = {"probed": len(probes), "exposed": sum(p["exposed"] for p in probes)}
    return scores, {"answers": answers, "rag": rag_rows, "canary_probes": probes}


def score_champion(model_name: str, test_set: list[dict], rag_set: RagSet, cfg: EvaluateConfig,
                   deploy_cfg: DeployConfig, answers: list[dict], times: dict[str, float]) -> dict | None:
    """The registry's champion, served and scored exactly as the candidate was; its answers join the candidate's rows.
    None before the first champion (the gates then say so)."""
    found = tracking.champion(model_name)
    if found is None:
        return None
    model_dir = tracking.fetch_model(found["source"], Paths.champion_cache / f"v{found['version']}")
    scores, tables = score_served(model_dir, test_set, rag_set, cfg, deploy_cfg, model_dir.parent / "load_test.json",
                                  times, "champion")
    for row, other in zip(answers, tables["answers"]):
        row |= {"champion_answer": other["answer"], "champion_rouge_l": other["rouge_l"]}
    return {"version": found["version"], **scores}


def evaluate(cfg: EvaluateConfig, deploy_cfg: DeployConfig, model_name: str, canaries: list[Canary] = (),
             base: Path = Paths.base_model, sft_adapter: Path = Paths.sft_adapter,
             dpo_adapter: Path = Paths.dpo_adapter, quantized: Path = Paths.quantized,
             sft_test: Path = Paths.sft_test, pref_test: Path = Paths.pref_test, out_dir: Path = Paths.eval_dir) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    with timed(times, "transformers: ppl and preference accuracy"):
        metrics = model_quality(base, sft_adapter, dpo_adapter, sft_test, pref_test)
    test_set = list(read_jsonl(sft_test))
    rag_set = user_set(cfg.rag) if cfg.rag.documents else held_out_set(test_set, cfg.rag)
    served, tables = score_served(quantized, test_set, rag_set, cfg, deploy_cfg, out_dir / "load_test.json", times,
                                  "candidate", canaries)
    metrics["ppl"] |= served.pop("ppl")
    metrics |= served
    champion = score_champion(model_name, test_set, rag_set, cfg, deploy_cfg, tables["answers"], times)
    if champion:
        metrics["champion"] = champion
    metrics["time_s"] = times
    write_jsonl(out_dir / "answers.jsonl", tables["answers"])
    for name, rows in tables.items():
        tracking.log_table(rows, f"eval/{name}.json")
    plots.bars(metrics["ppl"], out_dir / "perplexity.png", "Held-out perplexity by model", "perplexity (lower: better)")
    write_json(out_dir / Paths.metrics.name, metrics)
    return metrics

