"""The toxicity filter on a labelled set built for it, and its speed on real replies.

    .venv/bin/python -m benchmarks.toxicity

Prints precision and recall of the blocklist alone, the classifier alone (alt-profanity-check) at a few thresholds,
and both together as the clean stage runs them, on LABELLED: English and Chinese abuse, and look-alikes a filter
must let through (process and signal words, medicine and anatomy, place names, Chinese words that contain an
abusive character). Then replies per second on the embedded ShareGPT corpus, and how many it would drop.
"""
from __future__ import annotations

import time

from tasks.config import ToxicityConfig, changed, load_config
from tasks.data.filters.toxicity import classifier_scores, toxic_replies

TOXIC = [
    "You are a fucking idiot and nobody wants you here.",
    "Shut up, you worthless piece of shit.",
    "Go kill yourself, loser.",
    "What a stupid motherfucker you are.",
    "I hope you die in a fire, you pathetic moron.",
    "Only a retard would write code like this.",
    "You dumb bitch, learn to read.",
    "She's just a whore who sleeps around.",
    "Fuck off and never come back.",
    "You're a disgusting cunt.",
    "I will find where you live and beat the crap out of you.",
    "Shut your mouth, you ugly fat pig.",
    "This answer is bullshit and so are you, asshole.",
    "kys nobody cares",
    "You people are subhuman trash.",
    "Eat shit and die.",
    "你是个傻逼吧，连这个都不会。",
    "操你妈，别再问了。",
    "滚，你这个王八蛋。",
    "他妈的，这什么破代码。",
    "你这个贱人，去死吧。",
    "脑残才会这么想。",
    "狗日的东西，别烦我。",
    "草泥马，又出错了。",
]
CLEAN = [
    "To stop it, kill the process with kill -9 and its PID.",
    "The parent process kills its children when it exits.",
    "Use SIGKILL only when SIGTERM does not work.",
    "We need to execute the function and shoot a screenshot of the output.",
    "Take the photo with a wide lens; shoot in raw if you can.",
    "The patient reported rectal bleeding and was referred for a colonoscopy.",
    "Breast cancer screening starts at 40 in many countries.",
    "Vaginal and penile infections are treated with antifungal creams.",
    "An anal fissure usually heals within six weeks.",
    "Testicular self-examination helps find lumps early.",
    "Scunthorpe is a town in North Lincolnshire.",
    "The Middlesex cricket team won the match.",
    "Order a cocktail at the bar on Dick Street.",
    "Flame retardant materials slow the spread of fire.",
    "A female dog is called a bitch in breeding records.",
    "Find the chink in the armor of the argument.",
    "The assassin in Assassin's Creed climbs towers.",
    "Sex education should start early and be accurate.",
    "Dead code should be removed; the build died at step three.",
    "The hit man in the novel never misses.",
    "Hell's Kitchen is a neighbourhood in Manhattan.",
    "Damn, this recipe is good!",
    "Thank you for your help with the database migration.",
    "The bomb disposal unit defused the device safely.",
    "Shoot me an email when the report is ready.",
    "Kill two birds with one stone.",
    "请先杀死进程，然后重新启动服务。",
    "操作系统负责管理内存和进程。",
    "妈妈做的饭最好吃。",
    "他妈妈明天来看他。",
    "废物回收可以减少环境污染。",
    "日本的首都是东京。",
    "这个傻瓜相机很好用。",
    "干货：十个提高效率的小技巧。",
]


def prf(predicted: list[bool]) -> tuple[float, float]:
    labels = [True] * len(TOXIC) + [False] * len(CLEAN)
    tp = sum(p and t for p, t in zip(predicted, labels))
    fp = sum(p and not t for p, t in zip(predicted, labels))
    return tp / max(1, tp + fp), tp / len(TOXIC)


def flagged(cfg: ToxicityConfig) -> list[bool]:
    return [f is not None for f in toxic_replies([[{"role": "assistant", "content": t}] for t in TOXIC + CLEAN], cfg)]


def main() -> None:
    print(f"labelled set: {len(TOXIC)} toxic (16 English, 8 Chinese), {len(CLEAN)} clean look-alikes\n")
    print("| filter | precision | recall |\n|---|---:|---:|")
    print("| blocklist alone | %.2f | %.2f |" % prf(flagged(changed(load_config().clean.toxicity, threshold=1.0))))
    scores = classifier_scores(TOXIC + CLEAN)
    for t in (0.5, 0.8, 0.9, 0.95):
        print(f"| classifier >= {t} alone | %.2f | %.2f |" % prf([s >= t for s in scores]))
    default = load_config().clean.toxicity
    print(f"| both, as clean runs them (threshold {default.threshold}) | %.2f | %.2f |" % prf(flagged(default)))
    missed = [t for t, f in zip(TOXIC, flagged(default)) if not f]
    wrong = [t for t, f in zip(CLEAN, flagged(default)[len(TOXIC):]) if f]
    print(f"\nmissed: {missed}\nflagged clean: {wrong}\n")

    from tasks.data.ingest import EMBEDDED, normalise, raw_records

    conversations = []
    for _, record, reason in raw_records(EMBEDDED, offline=True):
        if reason is None:
            try:
                conversations.append(normalise(record)[1])
            except ValueError:
                continue
        if len(conversations) == 5000:
            break
    replies = sum(m["role"] == "assistant" for c in conversations for m in c)
    t0 = time.perf_counter()
    found = toxic_replies(conversations, default)
    seconds = time.perf_counter() - t0
    by = {r: sum(1 for f in found if f and f[0] == r) for r in ("toxic_blocklist", "toxic_classifier")}
    print(f"{len(conversations)} ShareGPT conversations ({replies} replies): {seconds:.2f} s, "
          f"{replies / seconds:,.0f} replies/s; flagged: {by}")


if __name__ == "__main__":
    main()
