"""Settings that can hold credentials never reach MLflow as they are: `redact` is applied to every param and tag the
pipeline logs (tasks/tracking.py).

Redacted, by key: a key with a word (split on `.`, `_` and `-`) such as token, key, password or secret; `max_tokens`
is not one (its word is `tokens`), nor is `api_key_env`, which names the variable that holds a key, never the key. In an
`env` map (vllm.env) every value is masked except the runtime tunings that explain a figure (VLLM_CPU_KVCACHE_SPACE,
OMP_NUM_THREADS) whose names have no such word (VLLM_API_KEY is masked). By value: the user:password@ part of a URL,
and secret-named query values.
"""
from __future__ import annotations

import re

MASK = "***"
SECRET_WORDS = {"token", "key", "apikey", "password", "passwd", "pwd", "pass", "secret", "credential", "credentials",
                "auth"}
TUNING_PREFIXES = ("VLLM_", "OMP_", "MKL_", "KMP_", "CUDA_", "NCCL_", "TORCH_", "PYTORCH_", "TOKENIZERS_")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s]+@")
_QUERY = re.compile(r"(?P<name>[?&][^=&#\s]*(?:token|key|password|secret|sig|signature)[^=&#\s]*=)[^&#\s]+",
                    re.IGNORECASE)


def secret_key(key: str) -> bool:
    parents, name = key.split(".")[:-1], key.split(".")[-1]
    words = re.split(r"[_\-]", name.lower())
    if "env" in parents:
        return bool(SECRET_WORDS & set(words)) or not name.upper().startswith(TUNING_PREFIXES)
    return bool(SECRET_WORDS & set(words)) and words[-1] != "env"


def redact_value(value):
    """A string with URL credentials and secret query values masked; other values as they are."""
    if not isinstance(value, str):
        return value
    return _QUERY.sub(rf"\g<name>{MASK}", _USERINFO.sub(rf"\g<scheme>{MASK}@", value))


def redact(flat: dict[str, object]) -> dict[str, object]:
    """{dotted key: value} with credentials masked (an empty value stays empty: "no key set" is worth seeing)."""
    return {key: (MASK if value not in ("", None) else value) if secret_key(key) else redact_value(value)
            for key, value in flat.items()}
