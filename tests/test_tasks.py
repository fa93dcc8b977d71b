"""Offline lm-eval tasks (fbn_prune.texts.tasks): rendering, prompts, counts, errors, a tiny end-to-end run.

Needs the evaluation data folder ($FBN_PRUNE_DATA); skipped without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from conftest import SHARED_DATA as DATA  # noqa: E402

from fbn_prune.texts.tasks import documents, manager, registry, utils  # noqa: E402
from fbn_prune.texts.tasks import render as rendering  # noqa: E402
from fbn_prune.errors import UserError  # noqa: E402

if DATA is None or not all((DATA / f).is_file() for t in registry.LOCAL_TASKS.values() for f in t.files):
    pytest.skip(f"evaluation data not found (FBN_PRUNE_DATA={DATA})", allow_module_level=True)

LOCAL = ["arc_easy", "piqa", "lambada_openai", "wikitext"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Render into a scratch cache, not the user's."""
    root = tmp_path_factory.mktemp("fbn_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FBN_PRUNE_CACHE", str(root))
        mp.delenv("FBN_PRUNE_DATA", raising=False)
        yield root


@pytest.fixture(scope="module")
def tm(cache: Path) -> TaskManager:
    return manager.task_manager(data=str(DATA))


def test_task_list_renders(tm: TaskManager, cache: Path) -> None:
    assert sorted(tm.local_tasks) == sorted(LOCAL) and tm.missing == {}
    assert tm.rendered is not None and cache in tm.rendered.parents
    for name in LOCAL:
        yaml_path = tm.task_index[name].yaml_path
        assert yaml_path == tm.rendered / f"{name}.yaml", f"{name} still resolves to {yaml_path}"
        text = yaml_path.read_text()
        assert "@RENDERED@" not in text and "@DATA@" not in text
    assert manager.resolve_tasks(["piqa", "arc_easy", "piqa", " wikitext", "lambada_openai"], tm) == [
        "piqa",
        "arc_easy",
        "wikitext",
        "lambada_openai",
    ]
    assert rendering.render(DATA) == tm.rendered  # cached: same folder, nothing re-rendered


def test_same_prompt_fields_as_builtin(tm: TaskManager) -> None:
    """Our YAMLs keep lm-eval's prompt, target, choices, metrics and version (only the data source differs)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    keys = ["output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter", "test_split"]
    builtin_dir = manager._BUILTIN_TASKS
    sources = {"arc_easy": "arc/arc_easy.yaml", "piqa": "piqa/piqa.yaml"}
    sources |= {"lambada_openai": "lambada/lambada_openai.yaml", "wikitext": "wikitext/wikitext.yaml"}
    for name, rel in sources.items():
        ours = load_yaml(tm.rendered / f"{name}.yaml")
        theirs = load_yaml(builtin_dir / rel)
        for key in keys:
            a, b = ours.get(key), theirs.get(key)
            if callable(a) or callable(b):  # wikitext: lm-eval's own functions, loaded two ways
                a, b = (a.__module__, a.__name__), (b.__module__, b.__name__)
            assert a == b, f"{name}.{key}: {a!r} != {b!r}"
        assert ours["metric_list"] == theirs["metric_list"], name
        assert ours["metadata"]["version"] == theirs["metadata"]["version"], name


def test_documents_arc_easy_train(tm: TaskManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fbn_prune.texts.tasks")
    docs = documents.task_documents("arc_easy", tm=tm)
    assert len(docs) == 2251  # ARC-Easy-Train.jsonl, MANIFEST
    assert "from its train split" in caplog.text
    assert docs[0] == (
        "Question: Which factor will most likely cause a person to develop a fever?\n"
        "Answer: a bacterial population in the bloodstream"
    )
    assert all(d.startswith("Question: ") and "\nAnswer: " in d for d in docs)
    few = documents.task_documents("arc_easy", n=5, seed=1, tm=tm)
    assert len(few) == 5 and set(few) <= set(docs)
    assert few == documents.task_documents("arc_easy", n=5, seed=1, tm=tm)


def test_documents_piqa(tm: TaskManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fbn_prune.texts.tasks")
    docs = documents.task_documents("piqa", tm=tm)
    assert len(docs) == 1838  # piqa/valid.jsonl, MANIFEST
    assert "has no train split" in caplog.text and "from its validation split" in caplog.text
    # first record: label 0 -> sol1
    assert docs[0].startswith("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer: ")
    assert docs[0].endswith("made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.")
    assert all(d.startswith("Question: ") and "\nAnswer: " in d for d in docs)


def test_split_counts(tm: TaskManager) -> None:
    """Every split has the MANIFEST's record count; wikitext pages rebuild the whole file."""
    loaded = tm.load(LOCAL)["tasks"]
    arc, piqa, lam, wiki = (loaded[n] for n in LOCAL)
    assert (len(arc.training_docs()), len(arc.validation_docs()), len(arc.test_docs())) == (2251, 570, 2376)
    assert len(piqa.validation_docs()) == 1838 and not piqa.has_training_docs()
    assert len(lam.test_docs()) == 5153
    assert (len(wiki.validation_docs()), len(wiki.test_docs())) == (60, 62)
    text = (DATA / "wikitext2" / "test.txt").read_text(encoding="utf-8")
    joined = "\n".join(d["page"] for d in wiki.test_docs())
    assert text.endswith(joined) and not text[: len(text) - len(joined)].strip()
    assert wiki.test_docs()[0]["page"].startswith(" = Robert <unk> = \n")
    assert documents.task_documents("wikitext", n=1, tm=tm)[0].startswith(" = ")  # detokenized page, from validation


def test_wikitext_pages_rule() -> None:
    text = " \n = A = \n \n x \n = = Sub = = \n y \n = B = \n z \n"
    assert list(utils.wikitext_pages(text)) == [" = A = \n \n x \n = = Sub = = \n y ", " = B = \n z \n"]


def test_unknown_task_suggests(tm: TaskManager) -> None:
    with pytest.raises(UserError, match="did you mean.*arc_easy"):
        manager.resolve_tasks(["arc_esay"], tm)
    with pytest.raises(UserError, match="matches no task"):
        manager.resolve_tasks(["zz_no_such_*"], tm)


def test_missing_data(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text("")
    with pytest.raises(UserError, match=r"missing data file piqa/valid-labels\.lst for task piqa.*FBN_PRUNE_DATA"):
        registry.data_dir(str(tmp_path), tasks=["piqa"])
    with pytest.raises(UserError, match="is not a folder"):
        registry.data_dir(str(tmp_path / "nope"))
    empty = manager.task_manager(data=str(tmp_path))
    assert empty.local_tasks == [] and sorted(empty.missing) == sorted(LOCAL)
    with pytest.raises(UserError, match="missing data file arc_easy/ARC-Easy-Train.jsonl for task arc_easy"):
        manager.resolve_tasks(["arc_easy"], empty)
    with pytest.raises(UserError, match="missing data file"):
        documents.task_documents("lambada_openai", tm=empty)


def _tiny_llama() -> tuple[object, object]:
    """A random 2-layer Llama (hidden 64) with a byte-level BPE tokenizer (vocab 512) trained on WikiText lines."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = (DATA / "wikitext2" / "valid.txt").read_text(encoding="utf-8").split("\n")[:2000]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    special = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=special, eos_token=special, unk_token=special, pad_token=special,
        model_max_length=512,
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval(), tok


def test_simple_evaluate_tiny_llama(tm: TaskManager) -> None:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    model, tok = _tiny_llama()
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16, device="cpu", max_length=512)
    res = lm_eval.simple_evaluate(
        model=lm, tasks=LOCAL, task_manager=tm, limit=5, log_samples=False, bootstrap_iters=0
    )
    expected = {
        "arc_easy": ["acc", "acc_norm"],
        "piqa": ["acc", "acc_norm"],
        "lambada_openai": ["perplexity", "acc"],
        "wikitext": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    }
    for task, metrics in expected.items():
        got = res["results"][task]
        for metric in metrics:
            assert isinstance(got[f"{metric},none"], float), (task, metric, got)
        assert res["n-samples"][task]["effective"] == 5
    assert 0.0 <= res["results"]["piqa"]["acc,none"] <= 1.0
    assert res["results"]["wikitext"]["bits_per_byte,none"] > 0
