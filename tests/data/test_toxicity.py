"""The toxicity filter: abuse in English (classifier or blocklist) and Chinese (blocklist) is found, look-alikes are
not, a user's own blocklist file is added to the built-in one, and the clean stage drops toxic rows with their reason
and score in the audit while its counts reconcile."""
import json

import pytest

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.config import ToxicityConfig
from tasks.data.filters.toxicity import Blocklist, toxic_replies
from tests.conftest import configured, conversation


def verdicts(texts: list[str], cfg: ToxicityConfig = configured("clean.toxicity")) -> list[str | None]:
    return [f and f[0] for f in toxic_replies([[{"role": "assistant", "content": t}] for t in texts], cfg)]


def test_abuse_is_found_by_the_part_that_can_read_it():
    assert verdicts(["You are a fucking idiot.", "Shut up, you worthless piece of garbage and die.",
                     "你是个傻逼吧", "他妈的，又错了。"]) == \
        ["toxic_blocklist", "toxic_classifier", "toxic_blocklist", "toxic_blocklist"]


@pytest.mark.parametrize("text", [
    "To stop it, kill the process with kill -9 and its PID.",
    "The patient reported rectal bleeding; breast and testicular exams were normal.",
    "Scunthorpe and Middlesex are places; flame retardant slows a fire.",
    "Find the chink in the armor.",
    "请先杀死进程。操作系统管理内存。他妈妈明天来。废物回收。",
])
def test_lookalikes_pass(text):
    assert verdicts([text]) == [None]


def test_only_the_configured_roles_are_judged_and_the_worst_reply_gives_the_score():
    rows = [[{"role": "user", "content": "You are a fucking idiot."}, {"role": "assistant", "content": "I'm sorry."}]]
    assert toxic_replies(rows, configured("clean.toxicity")) == [None]
    assert toxic_replies(rows, configured("clean.toxicity", roles=["user", "assistant"]))[0][0] == "toxic_blocklist"


def test_a_users_blocklist_file_adds_terms_whole_words_latin_substrings_chinese(tmp_path):
    extra = tmp_path / "terms.txt"
    extra.write_text("# ours\nfrobnicate*\n垃圾人\n")
    cfg = configured("clean.toxicity", blocklist_file=str(extra), threshold=1.0)
    assert verdicts(["They frobnicated it.", "你这个垃圾人", "unfrobnicate", "hello"], cfg) == \
        ["toxic_blocklist", "toxic_blocklist", None, None]
    terms = Blocklist(["kys", "傻逼", "fuck*"])
    assert terms.search("lol KYS") and not terms.search("keys skys") and terms.search("真傻逼啊")
    assert terms.search("Fucking hell") and not terms.search("unfuckable? no: prefix terms start a word")


def test_clean_drops_toxic_rows_with_reason_and_score_and_counts_reconcile(tmp_path):
    from tasks.data.clean import clean

    fine = [("How do I speed up a slow SQL query?", "Add an index on the filtered column and read the query plan."),
            ("What is the capital of Japan?", "Tokyo has been the capital of Japan since 1868."),
            ("How do I stop a hung process on Linux?", "Find its PID with ps, then kill it: kill -9 PID."),
            ("Why do onions make you cry?", "Cutting them releases a gas that irritates the eyes' tear glands."),
            ("How should I store fresh basil?", "Keep the stems in a glass of water at room temperature."),
            ("请问如何学习编程？", "先选一门语言，比如 Python，然后每天写一点代码，多做小项目。")]
    rows = [conversation(q, a, f"ok{i}") for i, (q, a) in enumerate(fine)]
    rows += [conversation("Can you help me with my homework please?", "Shut up, you worthless fucking idiot, do "
                          "your own homework and stop wasting my time.", "bad-en"),
             conversation("你能帮我看看这段代码吗？谢谢你的帮助。", "你是个傻逼吧，这么简单的代码都不会写，自己去查文档。", "bad-zh")]
    write_jsonl(tmp_path / "in.jsonl", rows)
    counts = clean(configured("clean"), tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "audit.jsonl",
                   tmp_path / "r.json", tmp_path / "r.md", tmp_path / "plots", held_out_fraction=0.0)
    assert counts["dropped_by_reason"] == {"toxic_blocklist": 2}
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_dropped"] == 8
    audit = {a["id"]: a for a in read_jsonl(tmp_path / "audit.jsonl") if a["action"] == "dropped"}
    assert audit.keys() == {"bad-en", "bad-zh"} and audit["bad-en"]["stage"] == "toxicity"
    assert audit["bad-en"]["score"] > 0.9 and "fucking" not in json.dumps(audit)   # scores, never the raw text
    assert counts["seconds"]["scan"] >= 0 and "toxicity" in (tmp_path / "r.md").read_text()
