"""``fbn-prune heal``: distill the original model into a pruned checkpoint (widths unchanged)."""

from __future__ import annotations

from pathlib import Path

import click

from fbn_prune._runtime.dtypes import COMPUTE_NAMES
from fbn_prune.heal.distill import DEFAULT_LR, HealSettings, default_lr, steps_for_tokens
from fbn_prune.heal.run import heal, heal_summary
from fbn_prune.texts.calibration import DEFAULT_SOURCE


@click.command("heal")
@click.argument("checkpoint", type=str)
@click.option("--out", required=True, type=str, metavar="DIR", help="Folder for the healed checkpoint.")
@click.option("--base", type=str, metavar="MODEL",
              help="The original model (teacher) [the model named in the checkpoint's recipe/provenance].")
@click.option("--calib", "texts", default=DEFAULT_SOURCE, show_default=True, type=str, metavar="SOURCE",
              help="Training text, disjoint from your evaluation text: any calibration source (.txt, .jsonl, "
                   "data:REL, builtin:NAME, hf:DATASET[:CONFIG]:SPLIT[:FIELD]). The last 10% of its documents "
                   "are held out to measure the KL before and after.")
@click.option("--calib-field", "field", default="text", show_default=True, metavar="FIELD",
              help="Text field of a .jsonl file.")
@click.option("--data-dir", type=str, metavar="DIR", help="Folder that data:REL names are relative to.")
@click.option("--steps", type=int, metavar="N", help="Optimizer steps [250].")
@click.option("--tokens", type=int, metavar="N", help="Instead of --steps: train on at least N tokens.")
@click.option("--lora", "lora_rank", type=int, metavar="R", help="LoRA rank, merged back after training [16].")
@click.option("--full", is_flag=True, help="Train every weight instead of LoRA adapters.")
@click.option("--lr", type=float, metavar="LR", help=(
    f"Peak learning rate [{DEFAULT_LR['lora']:.0e} with LoRA, {DEFAULT_LR['full']:.0e} with --full].".replace("e-0", "e-")))
@click.option("--seq-len", type=int, default=256, show_default=True, metavar="N", help="Tokens per training block.")
@click.option("--batch-size", type=int, default=8, show_default=True, metavar="N", help="Blocks per step.")
@click.option("--kl-weight", type=float, default=1.0, show_default=True, help="Weight of KL(original || pruned).")
@click.option("--lm-weight", type=float, default=0.0, show_default=True, help="Weight of the next-token loss.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Distillation temperature.")
@click.option("--compute", type=click.Choice(COMPUTE_NAMES), default="auto", show_default=True,
              help="What the training multiplies in: float32, or bfloat16 autocast (weights, optimizer and loss stay "
                   "float32; about twice as fast on a CPU with AVX512-BF16); auto: bfloat16 where the device has it "
                   "in hardware.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=str, default="cpu", show_default=True, help="Torch device (cpu, cuda, cuda:N).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def heal_command(checkpoint, out, base, texts, field, data_dir, steps, tokens, lora_rank, full, lr, seq_len,
                 batch_size, kl_weight, lm_weight, temperature, compute, seed, device, overwrite, no_progress):
    """Heal a pruned CHECKPOINT by knowledge distillation from the model it was pruned from.

    The training state is saved beside --out (.NAME.heal-state) every 5 minutes and when Ctrl-C or
    SIGTERM stops the run (exit 130); the same command then continues from the saved step."""
    settings = heal_settings(steps=steps, tokens=tokens, lora_rank=lora_rank, full=full, lr=lr, seq_len=seq_len,
                             batch_size=batch_size, kl_weight=kl_weight, lm_weight=lm_weight,
                             temperature=temperature, compute=compute, seed=seed)
    folder = heal(checkpoint, out, texts, settings, base=base, field=field, data_dir=data_dir,
                  overwrite=overwrite, progress=not no_progress, device=device)
    click.echo(heal_summary(Path(folder)))


def heal_settings(*, steps=None, tokens=None, lora_rank=None, full=False, lr=None, **rest) -> HealSettings:
    """HealSettings from command-line values, with the mode-dependent defaults; UsageError for bad values."""
    if steps is not None and tokens is not None:
        raise click.UsageError("give --steps or --tokens, not both.")
    if full and lora_rank is not None:
        raise click.UsageError("give --lora R or --full, not both.")
    for name, value in (("--steps", steps), ("--tokens", tokens), ("--lora", lora_rank),
                        ("--seq-len", rest["seq_len"]), ("--batch-size", rest["batch_size"])):
        if value is not None and value < 1:
            raise click.UsageError(f"{name} must be at least 1.")
    if lr is not None and lr <= 0:
        raise click.UsageError("--lr must be positive.")
    rank = None if full else (lora_rank or 16)
    settings = HealSettings(lora_rank=rank, lr=lr or default_lr(rank), **rest)
    if tokens is not None:
        steps = steps_for_tokens(tokens, settings)
    return HealSettings(**{**settings.__dict__, "steps": steps or settings.steps})
