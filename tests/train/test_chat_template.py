"""Assistant-only loss is checked on real rows before training: the right template passes, a template without
generation markers or with misplaced ones stops the stage with what is wrong and how to fix it."""
import pytest

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.train.base_model import CHATML_TRAINING_TEMPLATE
from tasks.train.chat_template import ChatTemplateError, check_assistant_mask
from tests.conftest import configured

MULTI_TURN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
              {"role": "assistant", "content": "4"}]
BROKEN = {
    "no generation markers": (CHATML_TRAINING_TEMPLATE.replace("{% generation %}", "")
                              .replace("{% endgeneration %}", ""), "has none"),
    "assistant header trained": (CHATML_TRAINING_TEMPLATE.replace(
        "{{ '<|im_start|>assistant\n' }}{% generation %}", "{% generation %}{{ '<|im_start|>assistant\n' }}"),
        "prompt or template tokens would be trained"),
    "end-of-turn not trained": (CHATML_TRAINING_TEMPLATE.replace(
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
        "{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}"), "never learn to stop"),
    "whole conversation trained": ("{% generation %}" + CHATML_TRAINING_TEMPLATE.replace("{% generation %}", "")
                                   .replace("{% endgeneration %}", "") + "{% endgeneration %}", "1 trained spans"),
}


@pytest.fixture(scope="module")
def conversations(tiny_sets):
    return [r["messages"] for r in read_jsonl(tiny_sets["sft"])] + [MULTI_TURN]


def test_the_pipeline_template_trains_exactly_the_replies(base_model_dir, conversations):
    tokenizer = load_tokenizer(base_model_dir)
    assert check_assistant_mask(tokenizer, conversations, samples=len(conversations)) == CHATML_TRAINING_TEMPLATE


@pytest.mark.parametrize("name", BROKEN)
def test_a_wrong_template_fails_with_the_fix(name, base_model_dir, conversations):
    template, problem = BROKEN[name]
    assert template != CHATML_TRAINING_TEMPLATE
    tokenizer = load_tokenizer(base_model_dir)
    tokenizer.chat_template = template
    with pytest.raises(ChatTemplateError, match=problem) as error:
        check_assistant_mask(tokenizer, conversations[-1:])
    assert "{% generation %}...{% endgeneration %}" in str(error.value)


def test_sft_stops_before_training_on_a_wrong_template(base_model_dir, tiny_sets, tmp_path):
    """The stage itself runs the check: a template without markers never reaches the trainer."""
    import shutil

    from tasks.train.sft import sft

    broken = tmp_path / "model"
    shutil.copytree(base_model_dir, broken)
    tokenizer = load_tokenizer(broken)
    tokenizer.chat_template = BROKEN["no generation markers"][0]
    tokenizer.save_pretrained(broken)
    with pytest.raises(ChatTemplateError, match="no token would be trained"):
        sft(configured("sft", max_steps=1), 0, broken, tiny_sets["sft"], tiny_sets["sft"], tmp_path / "out",
            checkpoint_root=tmp_path / "ckpt")
    assert not (tmp_path / "out").exists()
