"""vllm.mode lora's served folder: the adapter, the base's tokenizer and the base it needs, checked by digest, so
an old version is never served on other base weights; vLLM gets the base with the adapter under the served name."""
import json
import shutil

import pytest

from tasks.common.adapter_folder import AdapterError, base_of, is_adapter_folder, write_adapter_folder
from tasks.common.vllm_server import ServerError, VLLMServer
from tests.conftest import ROOT, configured

SERVE = configured("vllm", python=str(ROOT / ".venv-serve" / "bin" / "python"))


def test_the_folder_names_its_base_and_vllm_serves_the_base_with_the_adapter(base_model_dir, untrained_adapter,
                                                                            tmp_path):
    folder = tmp_path / "served"
    write_adapter_folder(untrained_adapter, base_model_dir, folder)
    assert is_adapter_folder(folder) and not is_adapter_folder(base_model_dir)
    assert base_of(folder) == base_model_dir
    assert (folder / "tokenizer_config.json").exists() and not (folder / "config.json").exists()
    cmd = VLLMServer(SERVE, folder, served_name="smollm2").command()
    assert cmd[cmd.index("--model") + 1] == str(base_model_dir.resolve())
    assert cmd[cmd.index("--served-model-name") + 1] == "smollm2-base"
    assert cmd[cmd.index("--lora-modules") + 1] == f"smollm2={folder.resolve()}"
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "16"
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"r": 32}))
    with pytest.raises(ServerError, match="rank 32; vllm.max_lora_rank is 16: raise it"):
        VLLMServer(SERVE, folder)


def test_other_base_weights_or_no_base_are_refused_naming_both(base_model_dir, untrained_adapter, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(base_model_dir, base)
    folder = tmp_path / "served"
    write_adapter_folder(untrained_adapter, base, folder)
    with open(base / "model.safetensors", "r+b") as f:   # one byte of the weights changed
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(AdapterError, match="trained on base weights with md5"):
        base_of(folder)
    with pytest.raises(ServerError, match="base_model in params.yaml changed"):
        VLLMServer(SERVE, folder)
    shutil.rmtree(base)
    with pytest.raises(AdapterError, match="is not there: run `dvc repro base_model`"):
        base_of(folder)
