import json, time
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks import serve as bs
parser = FlexibleArgumentParser()
bs.add_cli_args(parser)
args = parser.parse_args([
    "--backend", "openai-chat", "--base-url", "http://127.0.0.1:8765",
    "--endpoint", "/v1/chat/completions", "--model", "cand", "--tokenizer", "/tmp/q8",
    "--dataset-name", "random", "--random-input-len", "128", "--random-output-len", "64",
    "--num-prompts", "16", "--max-concurrency", "4",
    "--save-result", "--result-dir", "/tmp/bench", "--result-filename", "r.json"])
t = time.time()
res = bs.main(args)          # sync wrapper: asyncio.run(main_async(args)) -> dict
print(f"BENCH WALL {time.time()-t:.1f}s  type(res)={type(res).__name__}")
print("keys:", sorted(res.keys()))
for k in ["completed","failed","duration","total_input_tokens","total_output_tokens",
          "request_throughput","output_throughput","total_token_throughput",
          "mean_ttft_ms","median_ttft_ms","p99_ttft_ms","mean_tpot_ms","median_tpot_ms",
          "mean_itl_ms","median_itl_ms","mean_e2el_ms","median_e2el_ms"]:
    print(k, res.get(k))
