"""Assistant-only loss is checked on real rows before training, for templates with `{% generation %}` markers and
without (the mask is then derived from the template): the model's own template trains exactly the replies, and a
template that would train prompts, train nothing or never the stop token stops the stage with what is wrong and how to
fix it."""
import shutil

import pytest

from tasks.common.chat_template import ChatTemplateError, has_generation_markers, masked_rows
from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.train.base_model import PROBE
from tests.conftest import configured

MULTI_TURN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
              {"role": "assistant", "content": "4"}]
# SmolLM2's ChatML with markers around each reply and its <|im_end|>: the same text as the model's own template.
MARKED = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PLAIN = MARKED.replace("{% generation %}", "").replace("{% endgeneration %}", "")
BROKEN = {
    "assistant header trained": (MARKED.replace("{{ '<|im_start|>assistant\n' }}{% generation %}",
                                                "{% generation %}{{ '<|im_start|>assistant\n' }}"),
                                 "prompt or template tokens would be trained"),
    "end-of-turn not trained": (MARKED.replace("{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
                                               "{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}"),
                                "never learn to stop"),
    "whole conversation trained": ("{% generation %}" + PLAIN + "{% endgeneration %}", "1 trained spans"),
    "no end-of-turn token": (PLAIN.replace("<|im_end|>", "\n"), "never learn to stop"),
    "history rewritten": (PLAIN.replace("{{ message['content'] + '<|im_end|>' }}",
                                        "{{ (message['content'] if loop.last else '...') + '<|im_end|>' }}"),
                          "does not render reply 1"),
    "no system role": ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                       "{% endif %}" + PLAIN, "refuses conversation 1: System role not supported"),
}


@pytest.fixture(scope="module")
def conversations(tiny_sets):
    return [r["messages"] for r in read_jsonl(tiny_sets["sft"])] + [MULTI_TURN, PROBE]


@pytest.mark.parametrize("template", ["own", "marked", "plain"])
def test_a_right_template_trains_exactly_the_replies(template, base_model_dir, conversations):
    """The model's own template (no markers, a default system prompt), ChatML with markers and without them give
    the same tokens and the same mask: each reply and its <|im_end|>, nothing else."""
    tokenizer = load_tokenizer(base_model_dir)
    assert not has_generation_markers(tokenizer.chat_template)
    tokenizer.chat_template = {"own": tokenizer.chat_template, "marked": MARKED, "plain": PLAIN}[template]
    rows = masked_rows(tokenizer, conversations, samples=len(conversations))
    trained = [tokenizer.decode([t for t, m in zip(r["input_ids"], r["assistant_masks"]) if m]) for r in rows]
    replies = ["".join(m["content"] + "<|im_end|>" for m in c if m["role"] == "assistant") for c in conversations]
    assert trained == replies
    if template == "own":
        assert "You are a helpful AI assistant named SmolLM" in tokenizer.decode(rows[0]["input_ids"])


@pytest.mark.parametrize("name", BROKEN)
def test_a_wrong_template_fails_with_the_fix(name, base_model_dir):
    template, problem = BROKEN[name]
    tokenizer = load_tokenizer(base_model_dir)
    tokenizer.chat_template = template
    with pytest.raises(ChatTemplateError, match=problem) as error:
        masked_rows(tokenizer, [MULTI_TURN])
    assert "{% generation %}...{% endgeneration %}" in str(error.value) or name == "no system role"


def _with_template(base_model_dir, folder, template):
    shutil.copytree(base_model_dir, folder)
    tokenizer = load_tokenizer(folder)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder


def test_sft_stops_before_training_on_a_wrong_template(base_model_dir, tiny_sets, tmp_path):
    """The stage itself runs the check: a template with no stop token never reaches the trainer."""
    from tasks.train.sft import sft

    broken = _with_template(base_model_dir, tmp_path / "model", BROKEN["no end-of-turn token"][0])
    with pytest.raises(ChatTemplateError, match="never learn to stop"):
        sft(configured("sft", max_steps=1), 0, broken, tiny_sets["sft"], tiny_sets["sft"], tmp_path / "out",
            checkpoint_root=tmp_path / "ckpt")
    assert not (tmp_path / "out").exists()


def test_the_base_model_stage_refuses_an_untrainable_template_before_any_data(base_model_dir, tmp_path):
    """Stage 1 renders a two-turn English and Chinese probe: a model SFT could not train stops there, not after
    ingest and cleaning, and leaves no base model behind."""
    from tasks.train.base_model import prepare_base_model

    broken = _with_template(base_model_dir, tmp_path / "model", BROKEN["history rewritten"][0])
    with pytest.raises(ChatTemplateError, match="does not render reply 1"):
        prepare_base_model(configured("base_model", source=str(broken), dtype="float32"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
