"""evaluate's load test: held-out questions through vLLM's own benchmark client, each generating exactly its reply's
token count, with the server's Prometheus figures of the same window."""
import pytest

from tasks.common.modeling import load_tokenizer
from tasks.evaluate.evaluate import bench_request, bench_serve, load_requests
from tests.conftest import configured, conversation

pytestmark = pytest.mark.slow
TEST_SET = [conversation("Tell me about the moon and its phases.", "The moon orbits the earth every month, and as it "
                         "moves the sunlit part we see grows and shrinks: new, crescent, half, gibbous, full.", "a"),
            conversation("How do I boil an egg?", "Put it in boiling water for about nine minutes.", "b"),
            conversation("Hi", "Hello!", "c")]    # a question under vLLM's 4-token minimum: left out


def test_requests_carry_the_reply_length_cut_to_the_limit(base_model_dir):
    tokenizer = load_tokenizer(base_model_dir)
    requests = load_requests(TEST_SET, tokenizer, configured("evaluate", load_prompts=5, load_output_len=16))
    egg_reply = len(tokenizer(TEST_SET[1]["messages"][1]["content"])["input_ids"])
    assert len(requests) == 5 and requests[0]["output_tokens"] == 16                  # a long reply: cut to the limit
    assert requests[1]["output_tokens"] == egg_reply < 16                            # a short one: its own length
    assert requests[2] == requests[0]                               # cycled over the two usable questions
    assert bench_request(tokenizer, "Hi", "Hello there, friend!", 16) is None


def test_every_request_generates_its_length_and_prometheus_sees_the_load(base_server, base_model_dir, tmp_path):
    requests = load_requests(TEST_SET, load_tokenizer(base_model_dir), configured("evaluate", load_prompts=6,
                                                                                      load_output_len=16))
    result = bench_serve(base_server, requests, concurrency=3, tokenizer_dir=base_model_dir,
                         out=tmp_path / "load.json")
    assert result["completed"] == 6 and result["failed"] == 0
    assert result["total_output_tokens"] == sum(r["output_tokens"] for r in requests)   # ignore_eos: exact lengths
    assert result["median_ttft_ms"] > 0 and result["p99_e2el_ms"] >= result["median_e2el_ms"]
    seen = result["prometheus"]
    assert seen["output_tokens_per_s"] > 0 and 0 < seen["ttft_s_p50"] <= seen["ttft_s_p99"]
