import json, time, urllib.request
from transformers import AutoTokenizer
B = "http://127.0.0.1:8765"
def post(path, body):
    req = urllib.request.Request(B+path, data=json.dumps(body).encode(), headers={"Content-Type":"application/json"})
    with urllib.request.urlopen(req, timeout=120) as r: return json.loads(r.read())
tok = AutoTokenizer.from_pretrained("/tmp/q8")
SENTS = ["The capital of France is Paris, and it is known for the Eiffel Tower.",
         "Machine learning models can be compressed by quantizing their weights to fewer bits.",
         "Once upon a time, there was a little girl who lived in a village near the forest."]
for s in SENTS[1:] + ["A completely fresh sentence about seven purple elephants dancing in Tokyo at midnight. " * 20]:
    ids = tok(s).input_ids
    t = time.time()
    r = post("/v1/completions", {"model":"cand","prompt":ids,"max_tokens":1,"prompt_logprobs":0})
    pl = r["choices"][0]["prompt_logprobs"]
    lp = [pl[i][str(ids[i])]["logprob"] for i in range(1, len(ids))]
    print(f"{len(ids)} toks {time.time()-t:.2f}s meanNLL {-sum(lp)/len(lp):.5f}  usage {r['usage']}")
