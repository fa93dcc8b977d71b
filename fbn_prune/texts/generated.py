"""``generated``: calibration text the model writes itself, continuing a few neutral prompts."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from fbn_prune.models.placement import input_device

GENERATED = "generated"


# Neutral openings for self-generated calibration text (general-purpose prose).
PROMPTS = (
    "The history of the city begins",
    "In mathematics, a function is",
    "Scientists have recently discovered that",
    "The recipe calls for",
    "Once upon a time, in a small village,",
    "The main causes of the war were",
    "To install the software, first",
    "Photosynthesis is the process by which",
    "The football match ended",
    "According to the report, the economy",
    "The museum's collection includes",
    "Question: Why do leaves change color in autumn?\nAnswer:",
    "The river flows through",
    "In his early career, the musician",
    "A healthy diet should include",
    "The following instructions explain how to",
)


def generate_documents(model, tokenizer, n: int, max_new_tokens: int, seed: int, batch_size: int = 16) -> list[str]:
    """``n`` texts the model writes itself, continuing ``PROMPTS`` with seeded sampling."""
    device = input_device(model)
    gen = torch.Generator().manual_seed(seed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[str] = []
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            for start in tqdm(range(0, n, batch_size), desc="generate calibration", unit="batch"):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
                out = model.generate(
                    **enc, do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                texts += tokenizer.batch_decode(out, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts
