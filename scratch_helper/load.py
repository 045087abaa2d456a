import sys, time, torch
t0 = time.time()
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
t = time.time()
m = AutoModelForCausalLM.from_pretrained(path)
print(f"load {time.time()-t:.2f}s dtype={m.dtype} q_proj={type(m.model.layers[0].self_attn.q_proj).__name__} params={[n for n,_ in m.model.layers[0].self_attn.q_proj.named_parameters()]} status={m.model.layers[0].self_attn.q_proj.quantization_status}")
tok = AutoTokenizer.from_pretrained(path)
SENTS = ["The capital of France is Paris, and it is known for the Eiffel Tower.",
         "Machine learning models can be compressed by quantizing their weights to fewer bits.",
         "Once upon a time, there was a little girl who lived in a village near the forest."]
t = time.time()
with torch.no_grad():
    ls = [m(ids, labels=ids).loss.item() for ids in (tok(s, return_tensors="pt").input_ids for s in SENTS)]
print(f"loss {sum(ls)/3:.5f} ({time.time()-t:.2f}s); total incl imports {time.time()-t0:.2f}s")
