"""Fast masked-model evaluation for method research (no surgery, no lm-eval): WikiText-2 test token
perplexity on a fixed prefix and ARC-Easy test acc_norm on the first N questions.

Masking dropped channels is mathematically the pruned model (see fbn_prune.export.verify), so
screening many selections costs forward passes only. Final numbers come from lm-eval
(benchmarks/quality.py, `fbn-prune eval`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from fbn_prune.export.verify import masked


def wikitext_ppl(model, tok, data: Path, n_tokens: int = 8192, seq_len: int = 512) -> float:
    """Token-level perplexity over the first ``n_tokens`` of WikiText-2 test, in ``seq_len`` windows."""
    text = (data / "wikitext2" / "test.txt").read_text()
    ids = tok(text, return_tensors="pt")["input_ids"][0][: n_tokens + 1]
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, n_tokens, seq_len):
            chunk = ids[start : start + seq_len + 1].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            out = model(input_ids=chunk[:, :-1]).logits.float()
            nll += torch.nn.functional.cross_entropy(out[0], chunk[0, 1:], reduction="sum").item()
            count += chunk.shape[1] - 1
    return math.exp(nll / count)


def arc_easy_acc_norm(model, tok, data: Path, n: int = 100) -> float:
    """acc_norm (log-likelihood / byte length of the answer) on the first ``n`` ARC-Easy test questions,
    with lm-eval's prompt "Question: {q}\\nAnswer:" and answer " {choice}"."""
    lines = (data / "arc_easy" / "ARC-Easy-Test.jsonl").read_text().splitlines()[:n]
    correct = 0
    with torch.inference_mode():
        for line in lines:
            rec = json.loads(line)
            ctx = f"Question: {rec['question']['stem']}\nAnswer:"
            choices = [c["text"] for c in rec["question"]["choices"]]
            gold = [c["label"] for c in rec["question"]["choices"]].index(rec["answerKey"])
            ctx_ids = tok(ctx)["input_ids"]
            seqs = [ctx_ids + tok(" " + c)["input_ids"] for c in choices]
            longest = max(len(s) for s in seqs)
            batch = torch.full((len(seqs), longest), tok.pad_token_id or 0)
            for b, s in enumerate(seqs):
                batch[b, : len(s)] = torch.tensor(s)
            logp = model(input_ids=batch).logits.float().log_softmax(-1)
            scores = []
            for b, (s, c) in enumerate(zip(seqs, choices)):
                cont = range(len(ctx_ids), len(s))
                ll = sum(logp[b, t - 1, s[t]].item() for t in cont)
                scores.append(ll / len((" " + c).encode()))
            correct += int(max(range(len(scores)), key=scores.__getitem__) == gold)
    return correct / len(lines)


def evaluate_kept(model, tok, adapter, kept, data: Path, ppl_tokens=8192, arc_n=0) -> dict:
    with masked(model, adapter, kept):
        out = {"ppl": wikitext_ppl(model, tok, data, ppl_tokens)}
        if arc_n:
            out["arc_easy"] = arc_easy_acc_norm(model, tok, data, arc_n)
    return out
