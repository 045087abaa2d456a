import os, sys, time, torch
os.environ.setdefault("HF_HUB_OFFLINE","1")
from transformers import AutoModelForCausalLM, AutoTokenizer
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier

BASE = "/work/main/data/models/base"
which = sys.argv[1]  # q8 or q4
out = f"/tmp/{which}"
tok = AutoTokenizer.from_pretrained(BASE)
SENTS = ["The capital of France is Paris, and it is known for the Eiffel Tower.",
         "Machine learning models can be compressed by quantizing their weights to fewer bits.",
         "Once upon a time, there was a little girl who lived in a village near the forest."]

@torch.no_grad()
def loss(m):
    ls = []
    for s in SENTS:
        ids = tok(s, return_tensors="pt").input_ids
        ls.append(m(ids, labels=ids).loss.item())
    return sum(ls)/len(ls)

model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.bfloat16)
t = time.time(); l0 = loss(model); print(f"orig loss {l0:.5f} ({time.time()-t:.2f}s)")
sd0 = {k: v.clone() for k, v in model.state_dict().items() if "q_proj.weight" in k}

if which == "q8":
    recipe = QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])
else:
    recipe = QuantizationModifier(
        config_groups={"group_0": {"targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                        "strategy": "group", "group_size": 64}}},
        ignore=["lm_head"])
t = time.time()
oneshot(model=model, recipe=recipe)
print(f"oneshot took {time.time()-t:.2f}s")
t = time.time(); l1 = loss(model); print(f"post-oneshot in-memory loss {l1:.5f} ({time.time()-t:.2f}s)")
k = next(iter(sd0)); w = model.state_dict()[k]
print("weight changed in memory:", not torch.equal(w, sd0[k]), "max abs diff", (w.float()-sd0[k].float()).abs().max().item())
print("q_proj module:", type(model.model.layers[0].self_attn.q_proj), getattr(model.model.layers[0].self_attn.q_proj, "quantization_scheme", None))
from compressed_tensors.quantization.lifecycle.helpers import disable_quantization, enable_quantization
model.apply(disable_quantization); print(f"loss with quantization disabled {loss(model):.5f}"); model.apply(enable_quantization)
t = time.time()
model.save_pretrained(out, save_compressed=True)
tok.save_pretrained(out)
print(f"saved in {time.time()-t:.2f}s", os.listdir(out))
print(f"in-memory loss after save_pretrained {loss(model):.5f}")
