"""Check, before training, that assistant-only loss trains exactly the assistant replies for this tokenizer.

TRL builds the loss mask from the chat template's `{% generation %}` markers. A template without them trains on
nothing (or TRL swaps in its own for a few known families); markers in the wrong place train on prompt tokens or
drop the end-of-turn token, and the loss still looks healthy. So the mask is checked on real rows: every trained
span must decode to one assistant reply followed by one end-of-turn special token, one span per reply, nothing else.
"""
from __future__ import annotations

FIX = ("Fix: give the base model's tokenizer a chat template that wraps each assistant reply *and* its end-of-turn "
       "token in `{% generation %}...{% endgeneration %}` and nothing else (tasks/train/base_model.py "
       "CHATML_TRAINING_TEMPLATE is one for ChatML models), save it with the base model, and re-run.")


class ChatTemplateError(ValueError):
    """The chat template would make assistant-only loss train on the wrong tokens."""


def training_template(tokenizer) -> str:
    """The template TRL's SFTTrainer will render with: the tokenizer's own when it has generation markers, else the
    patched one TRL ships for a few known model families."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template and has_generation_markers(template):
        return template
    try:
        patched = get_training_chat_template(tokenizer) if template else None
    except ValueError:
        patched = None
    if patched is None:
        raise ChatTemplateError(
            "assistant_only_loss needs `{% generation %}` markers in the chat template, and this tokenizer's template "
            "has none (nor is it a family TRL knows how to patch): no token would be trained. " + FIX)
    return patched


def _short(text: str, limit: int = 160) -> str:
    return repr(text if len(text) <= limit else text[:limit // 2] + " ... " + text[-limit // 2:])


def _spans(mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, m in enumerate(mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def mask_problem(tokenizer, messages: list[dict], template: str) -> str | None:
    """What is wrong with the trained tokens of one conversation, or None when they are exactly its replies."""
    enc = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    spans = _spans(mask)
    if not spans:
        return "no token is trained (the generation markers enclose nothing)"
    if len(spans) != len(replies):
        trained = ", ".join(_short(tokenizer.decode(ids[a:b]), 80) for a, b in spans)
        return f"{len(spans)} trained spans for {len(replies)} assistant replies: {trained}"
    special = set(tokenizer.all_special_ids)
    for (a, b), reply in zip(spans, replies, strict=True):
        body, last = tokenizer.decode(ids[a:b - 1]), ids[b - 1]
        if last not in special:
            return (f"the trained span {_short(tokenizer.decode(ids[a:b]))} does not end with an end-of-turn "
                    "token: the model would never learn to stop")
        if body not in (reply, reply.strip()):
            return (f"trained tokens {_short(tokenizer.decode(ids[a:b]))} are not the reply {_short(reply)} + "
                    "end-of-turn: prompt or template tokens would be trained")
    return None


def check_assistant_mask(tokenizer, conversations: list[list[dict]], samples: int = 8) -> str:
    """Raise ChatTemplateError unless the mask is right on the first `samples` conversations; returns the template."""
    template = training_template(tokenizer)
    for messages in conversations[:samples]:
        problem = mask_problem(tokenizer, messages, template)
        if problem:
            raise ChatTemplateError(f"wrong assistant-only loss mask with this chat template: {problem}. {FIX}")
    return template
