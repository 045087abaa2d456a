"""A real vLLM server (the serving env, started as a user would) on a real quantized checkpoint.

The perplexity ratios compare like with like, so they hold on any x86 CPU (AMX, AVX512-BF16 or AVX2 only): quantized
vs merged is one fp32 forward before and after quantization, and served vs quantized is the same replies scored by
vLLM. Each check is shown to fail on a model that is truly worse: 4-bit weights on a 135M model, a corrupted scale.
"""
import json
import os
import socket

import pytest
import torch

from tasks.common.jsonl import read_jsonl
from tasks.common.vllm_server import ServerError, VLLMServer
from tasks.config import QuantizeConfig
from tasks.serve.quantize import merge_and_quantize
from tasks.serve.smoke_test import SMOKE_PROMPT
from tests.conftest import ROOT, configured

pytestmark = pytest.mark.slow
SERVE_PY = str(ROOT / ".venv-serve" / "bin" / "python")
GATES = configured("gates")


def quantize(cfg: QuantizeConfig, base_model_dir, adapter, sets, out, lora: bool = False):
    """The quantize stage, calibrated on real ShareGPT exchanges and scored on held-out ones."""
    return merge_and_quantize(cfg, base_model_dir, adapter, sets["test"], sets["train"], out / "merged",
                              out / "quantized", out / "gguf", lora)


def served_ppl(model_dir, conversations) -> tuple[float, str]:
    from tasks.common.modeling import load_tokenizer, reply_batches
    from tasks.evaluate.evaluate import served_perplexity

    with VLLMServer(configured("vllm", python=SERVE_PY), model_dir) as server:
        ppl = served_perplexity(server, reply_batches(load_tokenizer(model_dir), conversations), concurrency=4)
        return ppl, server.chat(SMOKE_PROMPT)["choices"][0]["message"]["content"]


def corrupt_scales(model_dir, factor: float = 4.0) -> None:
    """Multiply every MLP down-projection's int8 scale: a checkpoint that loads and runs, but is wrong."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    for name in [n for n in tensors if n.endswith("mlp.down_proj.weight_scale")]:
        tensors[name] = (tensors[name].float() * factor).to(tensors[name].dtype)
    save_file(tensors, path, metadata={"format": "pt"})


def test_w8a8_is_small_and_close_and_vllm_serves_what_was_measured(base_model_dir, untrained_adapter, sharegpt_sets,
                                                                  tmp_path):
    q = quantize(configured("quantize", scheme="W8A8", compare=[], gguf=""), base_model_dir, untrained_adapter, sharegpt_sets,
                 tmp_path)
    assert q["quantized_mb"] < 0.7 * q["merged_mb"]
    assert q["ppl_ratio"] <= GATES.max_quant_ppl_ratio            # SmoothQuant + int8: close
    config = json.loads((tmp_path / "quantized" / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["quantization_config"]["format"] == "int-quantized"

    conversations = list(read_jsonl(sharegpt_sets["test"]))
    served, answer = served_ppl(tmp_path / "quantized", conversations)
    assert served <= GATES.max_served_ppl_ratio * q["quantized_ppl"]   # vLLM serves what was measured
    assert "paris" in answer.lower()

    corrupt_scales(tmp_path / "quantized")
    corrupted, _ = served_ppl(tmp_path / "quantized", conversations)
    assert corrupted > GATES.max_served_ppl_ratio * q["quantized_ppl"]


def test_lora_mode_serves_the_base_and_adapter_as_the_merged_model_measured(base_model_dir, noisy_adapter,
                                                                          sharegpt_sets, tmp_path):
    from tasks.common.modeling import load_model, load_tokenizer, perplexity

    q = quantize(configured("quantize", compare=[], gguf=""), base_model_dir, noisy_adapter, sharegpt_sets, tmp_path,
                 lora=True)
    assert q["scheme"] == "lora" and q["quantized_ppl"] == q["merged_ppl"] and q["ppl_ratio"] == 1.0
    assert q["quantized_mb"] < 0.1 * q["merged_mb"]                 # what a version adds: the adapter
    conversations = list(read_jsonl(sharegpt_sets["test"]))
    base_ppl = perplexity(load_model(base_model_dir), load_tokenizer(base_model_dir),
                          [c["messages"] for c in conversations], "base ppl")
    assert abs(q["merged_ppl"] / base_ppl - 1) > 0.25                # the adapter changes the model ...
    served, _ = served_ppl(tmp_path / "quantized", conversations)
    ratio = served / q["merged_ppl"]                                 # ... and vLLM applies it: base + adapter served
    assert 1 / GATES.max_served_ppl_ratio <= ratio <= GATES.max_served_ppl_ratio, (served, q["merged_ppl"], base_ppl)


def test_lossy_quantization_fails_the_like_for_like_ratio(base_model_dir, untrained_adapter, sharegpt_sets, tmp_path):
    q = quantize(configured("quantize", scheme="W4A16", compare=[], gguf=""), base_model_dir, untrained_adapter, sharegpt_sets,
                 tmp_path)
    assert q["ppl_ratio"] > GATES.max_quant_ppl_ratio             # 4-bit weights at 135M lose (+40% in the pipeline)
    assert q["quantized_mb"] < 0.5 * q["merged_mb"]
    assert torch.float32 not in {t.dtype for t in _tensors(tmp_path / "quantized")}   # stored in the serving dtype


def test_each_variant_is_measured_and_the_gguf_file_is_the_merged_model(base_model_dir, untrained_adapter,
                                                                        sharegpt_sets, tmp_path):
    from gguf import GGUFReader

    from tasks.common.modeling import load_tokenizer, perplexity
    from tasks.release.report import variants_table
    from tasks.serve.gguf_export import export_gguf, load_gguf

    cfg = configured("quantize", scheme="W8A8", compare=["W4A16-GPTQ"], gguf="Q8_0", calibration_samples=4)
    q = quantize(cfg, base_model_dir, untrained_adapter, sharegpt_sets, tmp_path)
    assert set(q["variants"]) == {"W8A8", "W4A16-GPTQ", "GGUF Q8_0"}
    assert q["variants"]["W8A8"]["ppl"] == q["quantized_ppl"]
    assert q["variants"]["W4A16-GPTQ"]["size_ratio"] < 0.5 < q["variants"]["GGUF Q8_0"]["size_ratio"] < 0.6
    assert q["variants"]["GGUF Q8_0"]["ppl_ratio"] <= GATES.max_quant_ppl_ratio     # 8-bit blocks of 32: close
    table = "\n".join(variants_table(q))
    assert "| W8A8 (served) |" in table and "| W4A16-GPTQ |" in table and "| GGUF Q8_0 |" in table

    fields = GGUFReader(tmp_path / "gguf" / "model-Q8_0.gguf").fields      # what llama.cpp reads
    tokenizer = load_tokenizer(tmp_path / "merged")
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert len(fields["tokenizer.ggml.merges"].data) > 40_000

    # unquantized, the file is exactly the merged model: every tensor named, q/k rows in llama.cpp's order
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    f32 = export_gguf(merged, tmp_path / "merged", tmp_path / "f32" / "model.gguf", "F32", cfg.gguf_pre)
    conversations = [r["messages"] for r in read_jsonl(sharegpt_sets["test"])]
    assert perplexity(load_gguf(f32), tokenizer, conversations) == pytest.approx(q["merged_ppl"], rel=1e-4)


def _tensors(model_dir):
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors").values()


def test_server_that_cannot_start_fails_with_the_cause(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    server = VLLMServer(configured("vllm", python=SERVE_PY, startup_timeout_s=120), tmp_path / "not-a-model")
    with pytest.raises(ServerError, match="exited with code"):
        server.start()
    assert server.proc.poll() is not None


def test_missing_serving_env_is_a_clear_error(tmp_path):
    with pytest.raises(ServerError, match="make setup"):
        VLLMServer(configured("vllm", python=str(tmp_path / "nope" / "python")), tmp_path)


def test_a_port_in_use_is_refused_before_vllm_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = VLLMServer(configured("vllm", python=SERVE_PY, port=port), tmp_path)
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use"):
            server.start()
        assert server.proc is None


def test_a_start_timeout_names_itself_and_leaves_no_process(base_model_dir):
    server = VLLMServer(configured("vllm", python=SERVE_PY, startup_timeout_s=3), base_model_dir)
    with pytest.raises(ServerError, match="not healthy after 3 s"):
        server.start()
    assert server.proc.poll() is not None             # stopped: the reaper and vLLM's group with it
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)


def test_a_server_that_dies_while_serving_is_named_as_the_cause_and_leaves_nothing(base_model_dir):
    """What evaluate sees when vLLM is killed under it (OOM, a user's kill): an error naming the server, not a
    bare connection refusal; the engine and workers go down with the API server."""
    import signal
    import subprocess
    import time

    with VLLMServer(configured("vllm", python=SERVE_PY), base_model_dir) as server:
        assert server.chat(SMOKE_PROMPT)["choices"][0]["message"]["content"]
        api = int(subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout)
        os.kill(api, signal.SIGKILL)
        server.proc.wait(30)
        with pytest.raises(ServerError, match="vLLM exited with code .* while serving /v1/chat/completions"):
            server.chat(SMOKE_PROMPT)
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-g", str(server.proc.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "vLLM's engine outlived its API server"
        time.sleep(1)
