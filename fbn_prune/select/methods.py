"""The selection method registry: one class per method, with what it needs and how it scores.

The selection methods: one class per method, declaring what it needs from a networks artifact and
how it scores a layer (the maths is in scores.py and eliminate.py). Everything that lists or checks
method names reads :data:`METHODS` (the CLI's ``--method`` choices, the recipe check
:func:`method_for`, the artifact's contents, provenance).

Adding a method: one subclass of :class:`Method` with ``name``, ``needs`` and ``score``, added to
:data:`METHODS`; its row in docs/methods.md's table; its expected needs in tests/test_scores.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch

from fbn_prune.config.recipe import Selection
from fbn_prune.errors import UserError
from fbn_prune.models.arch import Adapter
from fbn_prune.select import scores
from fbn_prune.select.channels import activation_stats, channel_weight_sq, down_columns


@dataclass(frozen=True)
class Needs:
    """What a method reads from a networks artifact besides the model's weights."""

    maps: bool = False
    """ICA maps (runs, components, width) of every layer."""
    stats: bool = False
    """Per-channel activation statistics (capture: ``stats.safetensors``)."""
    gram: bool = False
    """The Gram matrix (width, width) of every layer's signal."""


@dataclass(frozen=True)
class ScoreInputs:
    """Everything a method's score of a layer may read.

    ``maps_fn(i)``: layer i's maps (runs, k, width) float32; ``gram_fn(i)``: its Gram matrix (width, width)
    float64; ``stats``: the artifact's statistics (Networks.stats); each None when not loaded.
    ``cache``: folder for fbn's scores; ``device``: where fbn's elimination runs."""

    model: object
    adapter: Adapter
    stats: dict[str, torch.Tensor] | None = None
    maps_fn: Callable[[int], torch.Tensor] | None = None
    gram_fn: Callable[[int], torch.Tensor] | None = None
    seed: int = 0
    network_weight: float = 1.0
    ridge: float = 1e-3
    cache: Path | None = None
    device: str = "cpu"

    def columns(self, layer: int) -> torch.Tensor:
        """The down projection's columns of ``layer``: (width, hidden) float64."""
        return down_columns(self.model, self.adapter, layer)


class Method:
    """A channel score. Subclasses set the class attributes and implement :meth:`score`."""

    name: ClassVar[str]
    needs: ClassVar[Needs] = Needs()
    network_weight: ClassVar[bool] = False
    """Reads ``selection.network_weight`` (the membership prior's weight)."""
    threshold: ClassVar[bool] = False
    """May take ``--threshold`` (the paper's |z| rule: network-membership methods only)."""
    cached: ClassVar[bool] = False
    """Its per-layer scores are cached in the networks artifact (``ScoreInputs.cache``): costly enough that
    the ranks of a distributed run share the layers (pipeline._share_scores)."""

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        """Scores of ``layer``'s channels, higher = keep: (width,) float64."""
        raise NotImplementedError


class Fbn(Method):
    name = "fbn"
    needs = Needs(maps=True, gram=True)
    network_weight = True
    threshold = True
    cached = True

    strength: ClassVar[Callable[[torch.Tensor], torch.Tensor]] = staticmethod(scores.membership)
    """A channel's network strength from a layer's maps (runs, k, width) -> (width,): the prior's m."""

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        maps = x.maps_fn(layer) if x.maps_fn else None
        p = scores.prior(maps, x.network_weight, self.strength) if maps is not None and x.network_weight else None
        return scores.fbn_scores(x.gram_fn(layer), x.columns(layer), p, x.ridge, x.cache, x.device)


class FbnRecur(Fbn):
    name = "fbn-recur"
    strength = staticmethod(scores.recurrence)


class FbnGroup(Fbn):
    name = "fbn-group"

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        return scores.within_groups(super().score(x, layer), scores.groups(x.maps_fn(layer)))


class FbnAct(Method):
    name = "fbn-act"
    needs = Needs(maps=True, stats=True)
    network_weight = True
    threshold = True

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        _, var, _ = activation_stats(x.stats, layer)
        return scores.flap(var, x.columns(layer)) * scores.prior(x.maps_fn(layer), x.network_weight)


class FbnPaper(Method):
    name = "fbn-paper"
    needs = Needs(maps=True)
    threshold = True

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        return scores.membership(x.maps_fn(layer)).double()


class Random(Method):
    name = "random"

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        return scores.random_scores(x.columns(layer).shape[0], x.seed, layer)


class Magnitude(Method):
    name = "magnitude"

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        return channel_weight_sq(x.model, x.adapter, layer).sqrt()


class WandaSp(Method):
    name = "wanda-sp"
    needs = Needs(stats=True)

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        _, _, norm = activation_stats(x.stats, layer)
        return scores.wanda_sp(norm, x.columns(layer))


class Flap(Method):
    name = "flap"
    needs = Needs(stats=True)

    def score(self, x: ScoreInputs, layer: int) -> torch.Tensor:
        _, var, _ = activation_stats(x.stats, layer)
        return scores.flap(var, x.columns(layer))


METHODS: dict[str, Method] = {m.name: m for m in (Fbn(), FbnRecur(), FbnGroup(), FbnAct(), FbnPaper(), Random(),
                                                  Magnitude(), WandaSp(), Flap())}
"""Every method by name, in the order the CLI and the docs list them (the first is the default)."""


THRESHOLD_RANKING: Method = FbnPaper()
"""What ``--threshold`` (the paper's |z| rule) ranks channels by, whichever membership method was asked for."""


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def method_for(name: str) -> Method:
    """The method called ``name``; UserError naming the known ones otherwise."""
    if name not in METHODS:
        raise UserError(f"selection: method must be one of {', '.join(METHODS)}, got {name!r}.")
    return METHODS[name]


def check_selection(selection: Selection) -> Method:
    """The recipe's method (its ``selection`` section), checked up front, before any weights load:
    its name, and that ``--threshold`` goes with a network-membership method. UserError otherwise."""
    method = method_for(selection.method)
    if selection.threshold is not None and not method.threshold:
        raise UserError("--threshold is the functional-network |z| rule; other methods take --ratio.")
    return method


def layer_scores(method: str | Method, model, adapter: Adapter, *, stats=None, maps_fn=None, gram_fn=None,
                 seed: int = 0, network_weight: float = 1.0, ridge: float = 1e-3, cache: Path | None = None,
                 device: str = "cpu") -> list[torch.Tensor]:
    """Scores of every layer for ``method`` (a name or a Method): one (width_i,) float64 tensor per layer.
    The keywords are :class:`ScoreInputs`'s."""
    m = method_for(method) if isinstance(method, str) else method
    x = ScoreInputs(model, adapter, stats=stats, maps_fn=maps_fn, gram_fn=gram_fn, seed=seed,
                    network_weight=network_weight, ridge=ridge, cache=cache, device=device)
    return [m.score(x, i) for i in range(adapter.num_layers(model))]
