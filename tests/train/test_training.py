"""SFT masks prompts; DPO moves the implicit reward the right way. Real model, real TRL trainers, tiny data."""
import pytest

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_model, load_tokenizer, preference_accuracies
from tests.conftest import configured

pytestmark = pytest.mark.slow


def test_sft_labels_mask_every_prompt_token(base_model_dir, tiny_sets, tmp_path):
    from tasks.train.sft import build_trainer

    trainer = build_trainer(configured("sft", max_steps=1, max_length=128), 0, base_model_dir, tiny_sets["sft"],
                            tiny_sets["sft"], tmp_path)
    example = trainer.train_dataset[0]
    batch = trainer.data_collator([example])
    labels, ids = batch["labels"][0].tolist(), batch["input_ids"][0].tolist()
    tokenizer = load_tokenizer(base_model_dir)
    trained = tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
    masked = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
    assert trained == "The capital of France is Paris.<|im_end|>"
    assert "What is the capital of France?" in masked and "<|im_start|>assistant" in masked


def test_sft_then_dpo_raises_reward_accuracy_on_training_pairs(base_model_dir, tiny_sets, tmp_path):
    from tasks.train.dpo import dpo
    from tasks.train.sft import sft

    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    sft_metrics = sft(configured("sft", max_steps=4, per_device_batch_size=4, max_length=128, eval_steps=4,
                                learning_rate=5e-4), 0, base_model_dir, tiny_sets["sft"], tiny_sets["sft"], sft_dir,
                      checkpoint_root=tmp_path / "ckpt")
    assert sft_metrics["steps"] == 4 and (sft_dir / "adapter_model.safetensors").exists()

    pairs = list(read_jsonl(tiny_sets["pref"]))
    tokenizer = load_tokenizer(base_model_dir)
    reference = load_model(base_model_dir, adapter=sft_dir)
    before = preference_accuracies(load_model(base_model_dir, adapter=sft_dir), reference, tokenizer, pairs)

    metrics = dpo(configured("dpo", max_steps=6, per_device_batch_size=4, max_length=128, learning_rate=5e-4), 0,
                  base_model_dir, sft_dir, tiny_sets["pref"], dpo_dir, checkpoint_root=tmp_path / "ckpt")
    after = preference_accuracies(load_model(base_model_dir, adapter=dpo_dir), reference, tokenizer, pairs)

    assert before["implicit_reward"] == 0.0          # policy == reference: every margin is exactly zero
    assert before["likelihood_policy"] == before["likelihood_reference"]
    assert after["implicit_reward"] >= 0.75
    assert metrics["last_reward_accuracy"] > metrics["first_reward_accuracy"]
    assert (dpo_dir / "loss_curve.png").exists()
