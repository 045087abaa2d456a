"""One real vLLM server of the base model for the judge and benchmark tests, started as evaluate starts its judge."""
import pytest

from tasks.common.vllm_server import VLLMServer
from tests.conftest import ROOT, configured


@pytest.fixture(scope="package")   # one start for every evaluate test module
def base_server(base_model_dir):
    cfg = configured("vllm", python=str(ROOT / ".venv-serve" / "bin" / "python"), max_model_len=4096)
    with VLLMServer(cfg, base_model_dir) as server:
        yield server
