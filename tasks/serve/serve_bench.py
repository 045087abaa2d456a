"""Load test with vLLM's own benchmark client; runs in the serving environment (`deploy.python -m tasks.serve.serve_bench`).

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
    keep = ("completed", "failed", "duration", "median_ttft_ms", "mean_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
            "mean_tpot_ms", "p99_tpot_ms", "output_throughput", "request_throughput", "total_token_throughput")
    with open(out, "w") as f:
        json.dump({k: result[k] for k in keep if k in result}, f, indent=2)
