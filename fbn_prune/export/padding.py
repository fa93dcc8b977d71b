"""What an export layout stores compared with what the model uses: the padded layout's waste, in words.

Pure functions of the per-layer width lists recorded in fbn_prune.json (no torch), shared by the
build step (a log warning), ``inspect`` (the summary) and the model card.
"""

from __future__ import annotations

from fbn_prune.config.layouts import layout_for


def full_width_layers(kept: list[int], original: list[int]) -> list[int]:
    """Indices of the layers that kept every FFN channel."""
    return [i for i, (k, o) in enumerate(zip(kept, original)) if k >= o]


def padding_note(layout: str, kept: list[int], stored: list[int], original: list[int]) -> str | None:
    """One sentence when a padded checkpoint stores every layer at its original width (saves nothing), else None.

    kept[i]: channels layer i keeps; stored[i]: channels written (padded: the widest kept, rounded
    up); original[i]: the model's width.
    """
    if not layout_for(layout).zero_padded or any(s < o for s, o in zip(stored, original)):
        return None
    full = full_width_layers(kept, original)
    which = (f"layer{'s' if len(full) > 1 else ''} {', '.join(map(str, full))} kept full width"
             if full else "the widest layer, rounded up, reaches the original width")
    return (f"padded layout saves nothing: every layer is stored at its original width because {which}; "
            "use --layout exact or uniform (or protect fewer layers) for a smaller checkpoint.")
