import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained("/tmp/q8"); tok = AutoTokenizer.from_pretrained("/tmp/q8")
for s in ["The capital of France is Paris, and it is known for the Eiffel Tower.","Machine learning models can be compressed by quantizing their weights to fewer bits.","Once upon a time, there was a little girl who lived in a village near the forest."]:
    ids = tok(s, return_tensors="pt").input_ids
    with torch.no_grad(): print(f"HF q8 loss {m(ids, labels=ids).loss.item():.5f}")
