"""Every record shape ingest knows by its keys becomes the same messages as the `messages` file of the same
conversations, English and Chinese; each shape's malformed rows are quarantined with their own reason; a column map
and role tags read a file named otherwise; a datasets folder is a source; preference rows are quarantined."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from tasks.common.jsonl import read_jsonl
from tasks.data.ingest import ingest
from tests.conftest import configured


def chat(system: str | None, *turns: str) -> list[dict]:
    roles = ["user", "assistant"] * len(turns)
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": role, "content": text} for role, text in zip(roles, turns)]


CONVERSATIONS = {   # id: messages; the two-turn ones only in the shapes that hold more than one exchange
    "en-two": chat("You are a concise assistant.", "What is DVC?", "A version control tool for data and models.",
                   "Does it store the data in git?", "No: git holds small pointer files, a remote holds the data."),
    "en-one": chat(None, "Translate into French:\nGood morning.", "Bonjour."),
    "zh-two": chat("你是一个简洁的助手。", "什么是微调？", "在预训练模型上用少量数据继续训练。",
                   "需要多少数据？", "几千条高质量对话通常就够了。"),
    "zh-one": chat("请用中文回答。", "把下面的句子翻译成英文：\n早上好。", "Good morning."),
}
ONE_EXCHANGE = ["en-one", "zh-one"]


def parts(messages: list[dict]) -> tuple[str | None, list[tuple[str, str]]]:
    """(system prompt, [(user, assistant), ...]) of a conversation."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    texts = [m["content"] for m in messages if m["role"] != "system"]
    return system, list(zip(texts[::2], texts[1::2]))


def with_system(system: str | None, row: dict) -> dict:
    return {**row, "system": system} if system else row


def sharegpt(messages: list[dict]) -> dict:
    system, pairs = parts(messages)
    tags = [{"from": tag, "value": text} for pair in pairs for tag, text in zip(("human", "gpt"), pair)]
    return with_system(system, {"conversations": tags})      # LLaMA-Factory's sharegpt: the system prompt beside


def alpaca(messages: list[dict]) -> dict:
    system, pairs = parts(messages)
    instruction, _, extra = pairs[-1][0].partition("\n")
    row = {"instruction": instruction, "input": extra, "output": pairs[-1][1]}
    return with_system(system, {**row, "history": [list(pair) for pair in pairs[:-1]]} if pairs[:-1] else row)


def exchange(ask: str, reply: str):
    def shape(messages: list[dict]) -> dict:
        system, [(user, assistant)] = parts(messages)
        return with_system(system, {ask: user, reply: assistant})
    return shape


SHAPES = {   # name: (row of the shape, whether it holds more than one exchange)
    "messages": (lambda messages: {"messages": messages}, True),
    "sharegpt": (sharegpt, True),
    "conversations-role-content": (lambda messages: {"conversations": messages}, True),
    "alpaca": (alpaca, True),
    "prompt-completion": (exchange("prompt", "completion"), False),
    "prompt-response": (exchange("prompt", "response"), False),
    "question-answer": (exchange("question", "answer"), False),
}


def run(tmp_path, rows: list[dict], name: str = "raw.jsonl", **changes) -> tuple[dict, dict, dict]:
    """(counts, {id: messages kept}, {id: quarantine reason}) of one ingest of `rows` written as JSONL."""
    src = tmp_path / name
    src.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return ingest_source(tmp_path, src, **changes)


def ingest_source(tmp_path, src, **changes) -> tuple[dict, dict, dict]:
    out, bad = tmp_path / f"{src.name}.ok.jsonl", tmp_path / f"{src.name}.bad.jsonl"
    counts = ingest(configured("ingest", sources=[{"path": str(src), **changes}]), out, bad, tmp_path / "report.json")
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_quarantined"]
    return (counts, {row["id"]: row["messages"] for row in read_jsonl(out)},
            {entry["id"]: entry["reason"] for entry in read_jsonl(bad)})


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_gives_the_messages_its_conversations_give(tmp_path, shape):
    to_row, multi_turn = SHAPES[shape]
    ids = list(CONVERSATIONS) if multi_turn else ONE_EXCHANGE
    _, as_messages, _ = run(tmp_path, [{"id": cid, "messages": CONVERSATIONS[cid]} for cid in ids], "messages.jsonl")

    counts, kept, bad = run(tmp_path, [{"id": cid, **to_row(CONVERSATIONS[cid])} for cid in ids])

    assert bad == {} and counts["rows_kept"] == len(ids)
    assert kept == as_messages == {cid: CONVERSATIONS[cid] for cid in ids}


def test_alpaca_joins_instruction_and_input_as_llama_factory_does(tmp_path):
    _, kept, _ = run(tmp_path, [{"id": "a", "instruction": "Sum:", "input": "2 + 2", "output": "4"},
                                {"id": "b", "instruction": "Say hi.", "input": "", "output": "Hi."}])
    assert [m["content"] for m in kept["a"]] == ["Sum:\n2 + 2", "4"]
    assert [m["content"] for m in kept["b"]] == ["Say hi.", "Hi."]


MALFORMED = {   # id: (row, quarantine reason)
    "alpaca-no-output": ({"instruction": "Say hi.", "input": ""}, "bad_alpaca: missing_output"),
    "alpaca-output-number": ({"instruction": "Add 2 and 2.", "output": 4}, "bad_alpaca: output_not_a_string"),
    "alpaca-output-blank": ({"instruction": "Say hi.", "output": " \n"}, "bad_alpaca: empty_output"),
    "alpaca-instruction-empty": ({"instruction": "", "input": "x", "output": "y"}, "bad_alpaca: empty_instruction"),
    "alpaca-input-list": ({"instruction": "Say hi.", "input": ["a"], "output": "Hi."},
                          "bad_alpaca: input_not_a_string"),
    "alpaca-history-flat": ({"instruction": "And 3?", "output": "9", "history": ["2?", "4"]},
                            "bad_alpaca: history_not_pairs"),
    "alpaca-history-triple": ({"instruction": "And 3?", "output": "9", "history": [["2?", "4", "8"]]},
                              "bad_alpaca: history_not_pairs"),
    "alpaca-history-text": ({"instruction": "And 3?", "output": "9", "history": "2? 4"},
                            "bad_alpaca: history_not_pairs"),
    "alpaca-output-nul": ({"instruction": "Say hi.", "output": "H\x00i"}, "nul_byte"),
    "prompt-no-completion": ({"prompt": "Say hi."}, "bad_prompt_completion: missing_completion"),
    "prompt-as-messages": ({"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello"},
                           "bad_prompt_completion: prompt_not_a_string"),
    "completion-empty": ({"prompt": "Say hi.", "completion": ""}, "bad_prompt_completion: empty_completion"),
    "question-null-answer": ({"question": "Why?", "answer": None}, "bad_question_answer: missing_answer"),
    "answer-number": ({"question": "2 + 2?", "answer": 4}, "bad_question_answer: answer_not_a_string"),
    "system-number": ({"question": "Why?", "answer": "Because.", "system": 1}, "bad_system: system_not_a_string"),
    "system-twice": ({"messages": chat("Be brief.", "Hi", "Hello"), "system": "Be kind."},
                     "bad_system: a_second_system_prompt"),
    "sharegpt-not-a-list": ({"conversations": "human: hi"}, "messages_not_a_list"),
    "sharegpt-robot": ({"conversations": [{"from": "robot", "value": "beep"}]}, "unknown_role"),
    "no-shape": ({"text": "What is DVC?"}, "missing_messages"),
}


def test_malformed_rows_of_each_shape_are_quarantined_with_their_reason_and_counts_reconcile(tmp_path):
    good = [{"id": f"good-{shape}", **to_row(CONVERSATIONS["zh-one"])} for shape, (to_row, _) in SHAPES.items()]
    rows = [{"id": rid, **row} for rid, (row, _) in MALFORMED.items()]

    counts, kept, bad = run(tmp_path, good[:4] + rows + good[4:])

    assert bad == {rid: reason for rid, (_, reason) in MALFORMED.items()}
    assert sorted(kept) == sorted(row["id"] for row in good)
    assert counts["rows_in"] == len(good) + len(MALFORMED)
    assert counts["quarantined_by_reason"] == Counter(reason.split(":")[0] for _, reason in MALFORMED.values())


def test_a_column_map_reads_a_file_whose_keys_are_named_otherwise(tmp_path):
    rows = [{"id": cid, "sys": system, "query": pairs[-1][0], "response": pairs[-1][1], "turns": pairs[:-1]}
            for cid, (system, pairs) in ((cid, parts(messages)) for cid, messages in CONVERSATIONS.items())]
    columns = {"instruction": "query", "output": "response", "system": "sys", "history": "turns"}

    counts, kept, _ = run(tmp_path, rows, columns=columns)
    assert kept == CONVERSATIONS and counts["rows_quarantined"] == 0

    _, _, bad = run(tmp_path, rows)                   # without the map: no known shape
    assert set(bad.values()) == {"missing_messages"}


def test_role_tags_map_onto_system_user_and_assistant(tmp_path):
    tags = {"system": "设定", "user": "用户", "assistant": "助手"}
    rows = [{"id": cid, "dialog": [{"from": tags[m["role"]], "value": m["content"]} for m in messages]}
            for cid, messages in CONVERSATIONS.items()]
    rows.append({"id": "cased", "dialog": [{"from": "Human", "value": "Hi"}, {"from": "BOT", "value": "Hello"}]})
    roles = {"设定": "system", "用户": "user", "助手": "assistant", "Bot": "assistant"}   # tags match in any case

    _, kept, bad = run(tmp_path, rows, columns={"conversations": "dialog"}, roles=roles)
    assert bad == {} and kept == {**CONVERSATIONS, "cased": chat(None, "Hi", "Hello")}

    _, kept, bad = run(tmp_path, rows, columns={"conversations": "dialog"})
    assert kept == {} and set(bad.values()) == {"unknown_role"}


def saved_dataset(folder, rows: list[str] | dict[str, list[str]]):
    """`folder` written by save_to_disk: a Dataset of the Alpaca rows of these conversations, or a DatasetDict of such
    splits. The first row holds every key, so rows without history or system hold null there, as datasets does."""
    import datasets

    def dataset(ids: list[str]) -> datasets.Dataset:
        return datasets.Dataset.from_list([{"id": cid, **alpaca(CONVERSATIONS[cid])} for cid in ids])

    saved = dataset(rows) if isinstance(rows, list) else datasets.DatasetDict(
        {name: dataset(ids) for name, ids in rows.items()})
    saved.save_to_disk(str(folder))
    return folder


def test_a_folder_saved_by_datasets_is_read_row_by_row(tmp_path):
    folder = saved_dataset(tmp_path / "saved", list(CONVERSATIONS))
    counts, kept, _ = ingest_source(tmp_path, folder)
    assert kept == CONVERSATIONS and counts["rows_in"] == len(CONVERSATIONS)


def test_a_dataset_dict_gives_its_train_split_and_one_without_is_refused_naming_its_splits(tmp_path):
    folder = saved_dataset(tmp_path / "split", {"train": ["en-two", "zh-two"], "test": ["en-one"]})
    _, kept, _ = ingest_source(tmp_path, folder)
    assert list(kept) == ["en-two", "zh-two"]

    folder = saved_dataset(tmp_path / "no-train", {"validation": ["en-one"], "test": ["zh-one"]})
    with pytest.raises(ValueError, match="is a DatasetDict without a train split \\(its splits: validation, test\\)"):
        ingest_source(tmp_path, folder)
    assert not (tmp_path / "no-train.ok.jsonl").exists()


def test_a_preference_row_is_quarantined_not_trained_on(tmp_path):
    rows = [{"id": "text", "prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
            {"id": "messages", "prompt": chat(None, "2 + 2?")[:1], "chosen": chat(None, "", "4")[1:],
             "rejected": chat(None, "", "5")[1:]},
            {"id": "implicit", "chosen": "Human: 2 + 2? Assistant: 4", "rejected": "Human: 2 + 2? Assistant: 5"}]
    counts, kept, bad = run(tmp_path, rows)
    assert kept == {} and bad == dict.fromkeys(("text", "messages", "implicit"), "preference_row")
    assert counts["quarantined_by_reason"] == {"preference_row": 3}

    _, kept, _ = run(tmp_path, rows[:1], columns={"completion": "chosen"})     # SFT on the chosen replies, if asked
    assert kept == {"text": chat(None, "2 + 2?", "4")}
