"""A multiple-choice benchmark through EleutherAI's lm-evaluation-harness (lm-eval), MMLU's mechanics.

On the embedded default the task is built here from held-out conversations only: each question is a held-out user
turn, the choices are its true reply and replies to other held-out prompts, all cut to the same length so that length
gives nothing away; lm-eval picks the choice with the highest log-likelihood (`acc`) and per byte (`acc_norm`).
Any task lm-eval knows by name (`benchmark.tasks`: mmlu, ceval-valid, cmmlu, ...) runs the same way when its data is
in the local HF cache (the run is offline). The same task scores every model: base, SFT and DPO in transformers
(lm-eval's HFLM over the models evaluate already loaded) and each served checkpoint through vLLM's
/v1/completions (lm-eval's `local-completions`; vLLM turns `echo` + `logprobs` into prompt logprobs).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import yaml

from tasks.common.jsonl import write_jsonl
from tasks.common.modeling import split_last_reply
from tasks.config import BenchmarkConfig

LOCAL_TASK = "heldout_reply_choice"


def cut(text: str, max_chars: int) -> str:
    """The first `max_chars` characters, ending at a word boundary."""
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0]


def write_local_task(conversations: list[dict], cfg: BenchmarkConfig, out_dir: Path, seed: int) -> Path:
    """The held-out task's JSONL and lm-eval YAML in `out_dir` (absolute `data_files`, as lm-eval needs)."""
    rng = random.Random(seed)
    splits = [split_last_reply(c["messages"]) for c in conversations]
    replies = [cut(reply[0]["content"], cfg.choice_chars) for _, reply in splits]
    docs = []
    for i, (prompt, _) in enumerate(splits[:cfg.size]):
        others = rng.sample([r for j, r in enumerate(replies) if j != i and r != replies[i]], cfg.choices - 1)
        answer = rng.randrange(cfg.choices)
        docs.append({"question": cut(prompt[-1]["content"], cfg.choice_chars * 2),
                     "choices": others[:answer] + [replies[i]] + others[answer:], "answer": answer})
    out_dir.mkdir(parents=True, exist_ok=True)
    data = (out_dir / f"{LOCAL_TASK}.jsonl").resolve()
    write_jsonl(data, docs)
    task = {"task": LOCAL_TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nReply:",
            "doc_to_choice": "choices", "doc_to_target": "answer", "target_delimiter": " ",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm")]}
    (out_dir / f"{LOCAL_TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return out_dir


def run(model, cfg: BenchmarkConfig, task_dir: Path, model_args: dict | None = None) -> dict:
    """acc and acc_norm per task for one model: an lm-eval LM object, or a model type name with its `model_args`."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    names = cfg.tasks or [LOCAL_TASK]
    # lm-eval's own task index takes ~10 s to build and the held-out task is not in it: built only for named tasks
    tasks = TaskManager(include_path=str(task_dir), include_defaults=bool(cfg.tasks))
    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=names, limit=cfg.limit or None,
                                      task_manager=tasks, log_samples=False,
                                      bootstrap_iters=0, verbosity="ERROR")["results"]
    return {task: {"acc": round(results[task]["acc,none"], 4),
                   "acc_norm": round(results[task]["acc_norm,none"], 4) if "acc_norm,none" in results[task] else None}
            for task in names}


def run_transformers(model, tokenizer, cfg: BenchmarkConfig, task_dir: Path) -> dict:
    from lm_eval.models.huggingface import HFLM

    return run(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), cfg, task_dir)


def run_served(base_url: str, model_name: str, tokenizer_dir: Path, cfg: BenchmarkConfig, task_dir: Path,
               concurrency: int) -> dict:
    args = {"model": model_name, "base_url": f"{base_url}/v1/completions", "tokenizer_backend": "huggingface",
            "tokenizer": str(tokenizer_dir.resolve()), "tokenized_requests": False, "num_concurrent": concurrency,
            "max_retries": 1}
    return run("local-completions", cfg, task_dir, args)
