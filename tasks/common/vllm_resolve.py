"""`python vllm_resolve.py MODEL_DIR DTYPE MAX_MODEL_LEN`, run by the serving env: what vLLM would serve MODEL_DIR as.

Prints one JSON line: {"architecture": ...} (a `Transformers...` one when vLLM has no implementation of its own and
falls back to the model's transformers code) or {"error": ...} with vLLM's own refusal. It builds vLLM's ModelConfig,
which is where `vllm serve` refuses an architecture, a context longer than the model's, or a dtype, before it loads a
weight (~7 s, most of it importing vLLM; a server start is ~35 s plus training before it). Standard library and vLLM
only: it runs under `vllm.python`, not the training env.
"""
import json
import re
import sys


def main() -> None:
    model, dtype, max_model_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from vllm.config import ModelConfig

    try:
        config = ModelConfig(model=model, dtype=dtype, max_model_len=max_model_len)
    except Exception as err:   # vLLM's refusals are ValueErrors wrapped by pydantic: the message is what matters
        wrapped = re.search(r"Value error, (.*?) \[type=", str(err), re.S)   # pydantic's frame around it
        message = (wrapped.group(1) if wrapped else str(err)).split("Supported architectures:")[0]
        print(json.dumps({"error": " ".join(message.split())[:1500]}))   # one line: the CLI prints it as one
        return
    print(json.dumps({"architecture": config.architecture}))


if __name__ == "__main__":
    main()
