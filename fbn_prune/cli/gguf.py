"""GGUF on the command line: ``fbn-prune export-gguf CHECKPOINT OUT.gguf`` and prune's ``--to-gguf``.

The writer is :mod:`fbn_prune.export.gguf`; it needs the optional ``gguf`` package, imported only
when a GGUF is asked for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
from safetensors import SafetensorError

from fbn_prune._io.atomic import atomic_write
from fbn_prune.errors import UserError, disk_error_message
from fbn_prune.export.gguf_target import DTYPES, check_output
from fbn_prune.export.provenance import PROVENANCE_FILE, read_provenance
from fbn_prune.ship.card import render_card
from fbn_prune.ship.hub import card_license

DEFAULT_DTYPE = "f16"


def _require_gguf() -> None:
    """One line (exit 2) when the optional gguf package is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError("GGUF export needs the gguf package: pip install gguf (or fbn-prune[gguf]).")


def _writer():
    """The writer module (:mod:`fbn_prune.export.gguf`), imported here because it imports the optional gguf
    package: the only fbn_prune import inside a function, so that every other command runs without gguf."""
    _require_gguf()
    from fbn_prune.export import gguf as gguf_export  # optional dependency gguf: only when a GGUF is written

    return gguf_export


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    return dtype


@click.command("export-gguf")
@click.argument("checkpoint", type=str)
@click.argument("out", type=str)
@click.option("--dtype", default=DEFAULT_DTYPE, show_default=True, metavar="|".join(DTYPES),
              help="Stored type of the weight matrices (norms and biases stay f32; q8_0 falls back to f16 for "
                   "rows not a multiple of 32).")
@click.option("--arch", "arch", default="auto", show_default=True, metavar="auto|original|deci",
              help="llama.cpp architecture: auto writes uniform as the original one (llama, qwen2, qwen3) and "
                   "padded/exact/deci layouts as deci with per-layer FFN widths (padded without its zero padding); "
                   "original keeps a padded checkpoint padded.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT file.")
def export_gguf_command(checkpoint, out, dtype, arch, overwrite):
    """Write CHECKPOINT (a pruned checkpoint or a Llama / Mistral / Qwen2 / Qwen3 folder) to OUT.gguf
    for llama.cpp, llama-cpp-python, ollama and LM Studio.

    \b
    Example:
      fbn-prune export-gguf smollm2-pruned smollm2-pruned.gguf --dtype q8_0
    """
    _check_dtype(dtype)
    result = _export(checkpoint, out, dtype=dtype, arch=arch, overwrite=overwrite)
    click.echo(_gguf_summary(result))


def _export(checkpoint, out, **kwargs):
    """export_gguf with the checkpoint's damaged weights and a failed write reported in one line (exit 2)."""
    try:
        return _writer().export_gguf(checkpoint, out, **kwargs)
    except SafetensorError as e:
        raise UserError(f"the weights of {checkpoint} are damaged ({e}); write the checkpoint again.") from e
    except OSError as e:
        raise UserError(disk_error_message(e) or f"could not write {out}: {e}; check the free space and the "
                        "folder, then run again (nothing was left at OUT).") from e


def gguf_options(fn):
    """prune's ``--to-gguf PATH`` and ``--gguf-dtype``; the command receives ``to_gguf`` and ``gguf_dtype``."""
    fn = click.option("--gguf-dtype", "gguf_dtype", default=DEFAULT_DTYPE, show_default=True, metavar="|".join(DTYPES),
                      help="Weight type of the --to-gguf file.")(fn)
    return click.option("--to-gguf", "to_gguf", type=str, metavar="PATH",
                        help="Also write the checkpoint as a GGUF file for llama.cpp (see `fbn-prune export-gguf`).")(fn)


def check_before_prune(to_gguf: str | None, gguf_dtype: str, overwrite: bool) -> None:
    """Refuse a bad --to-gguf target or dtype before the (long) pruning starts."""
    if not to_gguf:
        return
    _check_dtype(gguf_dtype)
    _require_gguf()
    check_output(to_gguf, overwrite)


def write_after_prune(checkpoint: Path, to_gguf: str | None, gguf_dtype: str, overwrite: bool) -> None:
    """--to-gguf: write the verified checkpoint's GGUF, record it in fbn_prune.json and the model card."""
    if not to_gguf:
        return
    result = _export(checkpoint, to_gguf, dtype=gguf_dtype, overwrite=overwrite)
    record_in_card(checkpoint, result)
    click.echo(_gguf_summary(result))


def record_in_card(checkpoint: Path, result) -> None:
    """Add the GGUF (file name, architecture, dtype) to the checkpoint's provenance and README.md (each
    replaced atomically)."""
    info = read_provenance(checkpoint)
    info.gguf = {"file": result.path.name, "architecture": result.architecture, "dtype": result.dtype}
    atomic_write(Path(checkpoint) / PROVENANCE_FILE, info.to_json())
    atomic_write(Path(checkpoint) / "README.md", render_card(info, license=card_license(info)))


def _gguf_summary(result) -> str:
    widths = sorted(set(result.widths))
    ffn = f"FFN width {widths[0]}" if len(widths) == 1 else f"FFN widths {min(widths)}-{max(widths)} per layer"
    return (f"gguf: {result.path} ({result.architecture}, {result.dtype}, {ffn}, {result.tensors} tensors, "
            f"{result.bytes / 2**20:.1f} MiB)")
