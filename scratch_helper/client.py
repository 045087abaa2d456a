import json, time, urllib.request
from transformers import AutoTokenizer
B = "http://127.0.0.1:8765"
def post(path, body):
    req = urllib.request.Request(B+path, data=json.dumps(body).encode(), headers={"Content-Type":"application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r: return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e: return e.code, e.read().decode()
t=time.time()
st, r = post("/v1/chat/completions", {"model":"cand","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":64,"temperature":0})
print("chat", st, f"{time.time()-t:.2f}s", repr(r["choices"][0]["message"]["content"]), r["usage"])
tok = AutoTokenizer.from_pretrained("/tmp/q8")
ids = tok("The capital of France is Paris, and it is known for the Eiffel Tower.").input_ids
print("ids", ids)
for k in (0, 1):
    t=time.time()
    st, r = post("/v1/completions", {"model":"cand","prompt":ids,"max_tokens":1,"prompt_logprobs":k,"temperature":0})
    print(f"\n--- prompt_logprobs={k}: status {st} {time.time()-t:.2f}s")
    if st != 200: print(r); continue
    ch = r["choices"][0]
    print("choice keys", list(ch.keys()), "top keys", list(r.keys()))
    pl = ch["prompt_logprobs"]
    print("len(prompt_logprobs)", len(pl), "len(ids)", len(ids))
    print("first 3 entries:", json.dumps(pl[:3]))
    # sum of logprob of each actual prompt token (skip first which is None)
    lp = [pl[i][str(ids[i])]["logprob"] for i in range(1, len(ids))]
    import math
    print("mean NLL over prompt tokens", -sum(lp)/len(lp))
    print("ch.logprobs", ch.get("logprobs"), "text", repr(ch["text"]))
# batched prompts: list of lists
st, r = post("/v1/completions", {"model":"cand","prompt":[ids, ids[:5]],"max_tokens":1,"prompt_logprobs":0})
print("\nbatch list-of-lists:", st, [(c["index"], len(c["prompt_logprobs"])) for c in r["choices"]] if st==200 else r)
