"""Knowledge distillation from the original model into a pruned checkpoint, widths unchanged.

    original (teacher) + pruned (student) + text --distill()--> healed student

The student learns the teacher's next-token distribution on text that is split, by
document, into training blocks and held-out blocks (never the evaluation text): the
loss per token is ``kl_weight * T² * KL(p_teacher(T) || p_student(T)) + lm_weight * CE``.
Either every weight of the student trains (``full``) or low-rank adapters (LoRA, peft)
on its linear layers train and are merged back into the weights afterwards, so the
healed model has exactly the pruned model's shapes and loads the same way.

Shapes: a batch of token blocks is (B, L) int64; logits are (B, L, V) float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fbn_prune._io.testhook import kill_point
from fbn_prune._runtime.dtypes import autocast_dtype
from fbn_prune.heal.state import StateStore, StopRequests, restore, stop_requests

log = logging.getLogger(__name__)

# the linear layers LoRA adapts, by module name suffix (all projections of attention and FFN)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj",
                "qkv_proj", "c_attn", "c_proj", "c_fc", "fc1", "fc2", "out_proj", "query_key_value", "dense",
                "dense_h_to_4h", "dense_4h_to_h")


#: Peak learning rate by what trains, when none is given (see docs/healing.md, "Choosing the learning rate").
DEFAULT_LR = {"lora": 5e-4, "full": 2e-5}


def default_lr(lora_rank: int | None) -> float:
    """The default peak learning rate: LoRA adapters of rank ``lora_rank``, or every weight (``None``)."""
    return DEFAULT_LR["full" if lora_rank is None else "lora"]


@dataclass(frozen=True)
class HealSettings:
    """How a pruned model is healed.

    ``steps``: optimizer steps of ``batch_size`` blocks of ``seq_len`` tokens each.
    ``lora_rank``: LoRA rank (adapters merged back afterwards); ``None`` trains every weight.
    ``heldout_fraction``: share of the documents (at least one) kept out of training to measure
    the held-out KL before and after.
    ``compute``: the training's matrix products in float32, or under bfloat16 autocast (weights,
    optimizer state and the loss stay float32; about twice as fast on a CPU with AVX512-BF16);
    auto: bfloat16 where the device has it in hardware. The held-out KL is always float32.
    """

    steps: int = 250
    seq_len: int = 256
    batch_size: int = 8
    lr: float = DEFAULT_LR["lora"]
    lora_rank: int | None = 16
    lora_alpha: float | None = None  # default 2 * rank
    kl_weight: float = 1.0
    lm_weight: float = 0.0
    temperature: float = 1.0
    warmup_steps: int = 10
    heldout_fraction: float = 0.1
    max_heldout_blocks: int = 16
    seed: int = 0
    compute: str = "auto"


@dataclass
class TokenBlocks:
    """Training and held-out token blocks, (n, seq_len) int64 each, from disjoint documents."""

    train: torch.Tensor
    heldout: torch.Tensor
    documents: int
    heldout_documents: int
    sha256: str


@dataclass
class HealResult:
    """What a healing run did; recorded in the checkpoint's provenance under ``healing``."""

    settings: dict
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    heldout_kl_before: float
    heldout_kl_after: float
    heldout_tokens: int
    loss_curve: list[float] = field(default_factory=list)  # mean training loss per logged interval
    loss_every: int = 1
    data: dict = field(default_factory=dict)


def steps_for_tokens(tokens: int, settings: HealSettings) -> int:
    """The number of steps that trains on at least ``tokens`` tokens."""
    return max(1, math.ceil(tokens / (settings.batch_size * settings.seq_len)))


def token_blocks(tokenizer, texts: list[str], settings: HealSettings) -> TokenBlocks:
    """Split ``texts`` by document into training and held-out sets, then pack each into blocks.

    Documents are joined with the end-of-text token and cut into (n, seq_len) blocks; the
    last ``heldout_fraction`` of the documents (at least one) are held out. Raises ValueError
    when there is not enough text for one training block and one held-out block.
    """
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise ValueError(f"healing needs at least 2 documents of text, got {len(texts)}")
    n_held = max(1, round(len(texts) * settings.heldout_fraction))
    train_docs, held_docs = texts[:-n_held], texts[-n_held:]
    sha = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    train = _pack(tokenizer, train_docs, settings.seq_len)
    held = _pack(tokenizer, held_docs, settings.seq_len)[: settings.max_heldout_blocks]
    if len(train) == 0 or len(held) == 0:
        raise ValueError(f"healing needs at least {settings.seq_len} tokens of training text and of held-out "
                         f"text; got {len(train)} training and {len(held)} held-out blocks (lower --seq-len or "
                         f"give more text)")
    return TokenBlocks(train, held, len(train_docs), len(held_docs), sha)


def _pack(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Documents joined by EOS and cut into full blocks: (n, seq_len) int64 (the remainder is dropped)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, ids: torch.Tensor,
                 settings: HealSettings) -> torch.Tensor:
    """Per-token mean loss of a batch.

    student_logits, teacher_logits: (B, L, V); ids: (B, L). KL(teacher || student) at temperature
    T, scaled by T² (Hinton et al.), plus optionally the language-model loss on the next token.
    """
    t = settings.temperature
    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, vocab) / t, dim=-1)
    p = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / t, dim=-1)
    loss = settings.kl_weight * (t * t) * F.kl_div(s, p, log_target=True, reduction="batchmean")
    if settings.lm_weight:
        lm = F.cross_entropy(student_logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
        loss = loss + settings.lm_weight * lm
    return loss


@torch.no_grad()
def heldout_kl(student, teacher, blocks: torch.Tensor, batch_size: int = 4) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 on ``blocks`` (n, L)."""
    device = _device(student)
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        ids = blocks[i : i + batch_size].to(device)
        s = F.log_softmax(student(input_ids=ids).logits.float(), dim=-1)
        p = F.log_softmax(teacher(input_ids=ids.to(_device(teacher))).logits.float().to(device), dim=-1)
        total += float((p.exp() * (p - s)).sum())
        count += ids.numel()
    return total / count


def distill(student, teacher, blocks: TokenBlocks, settings: HealSettings, progress: bool = True,
            state: StateStore | None = None):
    """Train ``student`` towards ``teacher`` on ``blocks.train``; returns (healed model, HealResult).

    The returned model has the student's architecture and shapes (LoRA adapters merged); the
    teacher is never changed. Deterministic for a given seed on one device.

    With ``state``, the training state is saved every ``state.every_s`` seconds, after the last step and
    when Ctrl-C or SIGTERM asks the run to stop (it then raises KeyboardInterrupt after saving), and a
    state saved under the same key is resumed: the result equals that of an unbroken run.
    """
    torch.manual_seed(settings.seed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    before = heldout_kl(student, teacher, blocks.heldout)
    model = _trainable(student, settings)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(settings))
    gen = torch.Generator().manual_seed(settings.seed)
    order = _order(len(blocks.train), settings.steps * settings.batch_size, gen)
    device = _device(model)
    amp = autocast_dtype(settings.compute, device)

    def fast():
        return torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None)

    losses: list[float] = []
    every = max(1, settings.steps // 100)
    window: list[float] = []
    start, earlier_s = 0, 0.0
    if state is not None and (resumed := state.load()) is not None:
        restore(model, opt, sched, resumed)
        start, losses, window, earlier_s = resumed.step, resumed.losses, resumed.window, resumed.seconds
        log.warning("resuming the stopped healing run at step %d of %d (state in %s)", start, settings.steps,
                    state.folder)
    model.train()
    t0 = last_save = time.perf_counter()
    saved = False
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="heal", unit="step",
               disable=not progress)
    with stop_requests() if state is not None else contextlib.nullcontext(StopRequests()) as stop:
        for step in bar:
            ids = blocks.train[order[step * settings.batch_size : (step + 1) * settings.batch_size]].to(device)
            window.append(_step(model, teacher, ids, opt, sched, params, settings, fast))
            if len(window) == every or step == settings.steps - 1:
                losses.append(round(sum(window) / len(window), 6))
                window = []
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            done, now = step + 1, time.perf_counter()
            if state is not None and (stop.requested or done == settings.steps or now - last_save >= state.every_s):
                saved = state.save(step=done, model=model, optimizer=opt, schedule=sched, losses=losses,
                                   window=window, seconds=earlier_s + now - t0)
                last_save = time.perf_counter()
            if stop.requested:
                where = (f"its state is saved in {state.folder}: run the same command again to continue" if saved
                         else "its state could not be saved (see the warning above)")
                raise KeyboardInterrupt(f"healing stopped after step {done} of {settings.steps}; {where}")
    seconds = earlier_s + time.perf_counter() - t0
    model.eval()
    healed = _merged(model, settings)
    after = heldout_kl(healed, teacher, blocks.heldout)
    return healed, _result(settings, amp, blocks, seconds, before, after, losses, every)


def _step(model, teacher, ids: torch.Tensor, opt, sched, params, settings: HealSettings, fast) -> float:
    """One optimizer step on the batch ``ids`` (B, L); returns its loss. ``fast()``: the autocast context."""
    device = ids.device
    with torch.no_grad(), fast():
        teacher_logits = teacher(input_ids=ids.to(_device(teacher))).logits.to(device)
    with fast():
        student_logits = model(input_ids=ids).logits
    loss = distill_loss(student_logits, teacher_logits, ids, settings)  # float32
    kill_point("heal", at=3)  # test hook (testhook.py): no-op unless a fault-injection test asks
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return loss.item()


def _result(settings: HealSettings, amp: torch.dtype | None, blocks: TokenBlocks, seconds: float, before: float,
            after: float, losses: list[float], every: int) -> HealResult:
    """The healing's record: settings, tokens and speed, held-out KL before and after, the loss curve, the data."""
    tokens = settings.steps * settings.batch_size * settings.seq_len
    log.info("healed %d steps (%d tokens) in %.1f s: held-out KL %.4f -> %.4f", settings.steps, tokens, seconds,
             before, after)
    return HealResult(
        settings=_settings_record(settings, amp), steps=settings.steps, tokens=tokens, seconds=round(seconds, 2),
        tokens_per_s=round(tokens / seconds, 1) if seconds else 0.0,
        heldout_kl_before=round(before, 6), heldout_kl_after=round(after, 6),
        heldout_tokens=int(blocks.heldout.numel()), loss_curve=losses, loss_every=every,
        data={"sha256": blocks.sha256, "documents": blocks.documents, "heldout_documents": blocks.heldout_documents,
              "train_blocks": len(blocks.train), "heldout_blocks": len(blocks.heldout)},
    )


def _settings_record(settings: HealSettings, amp: torch.dtype | None = None) -> dict:
    rec = asdict(settings)
    rec["mode"] = "full" if settings.lora_rank is None else "lora"
    rec["autocast"] = str(amp).removeprefix("torch.") if amp is not None else None  # what "auto" became
    return rec


def _trainable(student, settings: HealSettings):
    """The student with its trainable parameters: every weight, or LoRA adapters on its linear layers."""
    if settings.lora_rank is None:
        for p in student.parameters():
            p.requires_grad_(True)
        return student
    from peft import LoraConfig, get_peft_model  # optional heavy dependency, needed for LoRA only

    names = {n.rsplit(".", 1)[-1] for n, m in student.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = sorted(names & set(LORA_TARGETS))
    if not targets:
        raise ValueError(f"no linear layer of {type(student).__name__} matches LoRA's targets; use full training")
    config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha or 2 * settings.lora_rank,
                        lora_dropout=0.0, target_modules=targets, bias="none")
    with warnings.catch_warnings():  # peft reads transformers' deprecated aliases: nothing the user can act on
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(student, config)


def _merged(model, settings: HealSettings):
    """The plain transformers model, LoRA adapters folded into its weights."""
    if settings.lora_rank is None:
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    merged = model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def _schedule(settings: HealSettings):
    """Linear warm-up, then cosine decay to 10% of the learning rate."""
    warm = max(0, min(settings.warmup_steps, settings.steps - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, settings.steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _order(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` block indices: seeded permutations of range(n), concatenated (epochs)."""
    epochs = math.ceil(count / n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(epochs)])[:count]


def _device(model) -> torch.device:
    return next(model.parameters()).device
