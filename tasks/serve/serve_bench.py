"""Load test with vLLM's own benchmark client; runs in the serving environment (`vllm.python -m tasks.serve.serve_bench`).

vLLM's `benchmarks.serve` is the field's reference for TTFT/TPOT/throughput numbers, so its figures compare with
anyone else's. Kept free of project imports: the serving env has vllm, not the training stack.
"""
import json
import sys

from vllm.benchmarks import serve
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    out = sys.argv[1]
    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    result = serve.main(parser.parse_args(sys.argv[2:]))
    with open(out, "w") as f:   # the figures, not the per-request lists
        json.dump({k: v for k, v in result.items() if isinstance(v, (int, float))}, f, indent=2)
