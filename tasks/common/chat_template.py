"""Which tokens of a conversation SFT trains (the assistant replies and their end-of-turn token), for any chat template.

A template with `{% generation %}` markers says so itself (transformers' `return_assistant_tokens_mask`). Most
released chat models have no markers, so for those the mask is derived from the template: render the conversation
up to each assistant turn with the generation prompt, then with the reply; what the reply added, less the whitespace
the template puts between turns, is trained. That needs a template whose earlier turns render the same whichever turn
is last (true of ChatML, Llama 3, Gemma, Mistral, Phi-3); one that rewrites history (e.g. dropping earlier reasoning)
is refused with the fix. Either way the result is checked on real rows before training: every trained span must
decode to one assistant reply followed by one end-of-turn special token, one span per reply, nothing else. Markers in
the wrong place train prompt tokens or drop the stop token while the loss still looks healthy.
"""
from __future__ import annotations

from tasks.common.errors import UserError

FIX = ("Fix: give the base model's tokenizer a chat template that renders earlier turns the same whichever turn is "
       "last and ends each assistant reply with an end-of-turn special token, or one that wraps each assistant reply "
       "*and* its end-of-turn token in `{% generation %}...{% endgeneration %}` and nothing else; save it with the "
       "base model (base_model.source) and re-run.")


class ChatTemplateError(ValueError, UserError):
    """The chat template would make assistant-only loss train on the wrong tokens: the base model's, a user's choice,
    so the CLI says it in one line."""


def has_generation_markers(template: str) -> bool:
    from trl.chat_template_utils import has_generation_markers as markers

    return markers(template)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _end_of_turn(tokenizer, text: str, at: int) -> int:
    """Where the end-of-turn special token that starts at `at` (after spaces) ends; `at` when there is none."""
    start = len(text) - len(text[at:].lstrip())
    found = [t for t in tokenizer.all_special_tokens if text.startswith(t, start)]
    return start + max(map(len, found)) if found else at


def _reply_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans of `text` (the whole conversation rendered) holding each assistant reply and its end-of-turn
    token: the reply is found after the generation prompt in the conversation rendered up to it. What a template
    adds to a finished conversation only (Phi-3's final <|endoftext|>) or between turns is not part of it."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise ChatTemplateError("a conversation opens with an assistant reply: there is no prompt to answer")
        before, upto = _render(tokenizer, messages[:i], True), _render(tokenizer, messages[:i + 1])
        reply = message["content"].strip()
        at = upto.find(reply, len(before)) if upto.startswith(before) else -1
        end = _end_of_turn(tokenizer, upto, at + len(reply))
        if at < 0 or upto[len(before):at].strip() or not text.startswith(upto[:end]):
            raise ChatTemplateError(
                f"this chat template does not render reply {len(spans) + 1} right after the generation prompt, or "
                f"renders it differently once later turns follow it, so the assistant mask cannot be derived from "
                f"it. {FIX}")
        spans.append((at, end))
    return spans


def assistant_tokens(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """`input_ids` of the rendered conversation, as apply_chat_template tokenizes it, and a 0/1 mask of the tokens
    to train. A token is trained when it holds a character of a reply's span."""
    template = tokenizer.chat_template or ""
    if has_generation_markers(template):
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return list(enc["input_ids"]), list(enc["assistant_masks"])
    text = _render(tokenizer, messages)
    spans = _reply_spans(tokenizer, messages, text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(max(a, s) < min(b, e) for s, e in spans)) for a, b in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


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


def mask_problem(tokenizer, messages: list[dict], ids: list[int], mask: list[int]) -> str | None:
    """What is wrong with the trained tokens of one conversation, or None when they are exactly its replies."""
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
                    "special token: the model would never learn to stop")
        if body.strip() != reply.strip():
            return (f"trained tokens {_short(tokenizer.decode(ids[a:b]))} are not the reply {_short(reply)} + "
                    "end-of-turn: prompt or template tokens would be trained")
    return None


def masked_rows(tokenizer, conversations: list[list[dict]], samples: int = 8) -> list[dict]:
    """`{"input_ids", "assistant_masks"}` per conversation, the rows SFT trains on (TRL turns the mask into labels).
    Raises ChatTemplateError unless the mask is right on the first `samples` conversations: a template's fault shows
    on every row, and the check decodes every span."""
    from jinja2 import TemplateError

    rows = []
    for n, messages in enumerate(conversations):
        try:
            ids, mask = assistant_tokens(tokenizer, messages)
        except TemplateError as err:    # e.g. a template that has no system role, given a system prompt
            raise ChatTemplateError(f"the chat template refuses conversation {n + 1}: {err}") from err
        problem = mask_problem(tokenizer, messages, ids, mask) if n < samples else None
        if problem:
            raise ChatTemplateError(f"wrong assistant-only loss mask with this chat template: {problem}. {FIX}")
        rows.append({"input_ids": ids, "assistant_masks": mask})
    return rows
