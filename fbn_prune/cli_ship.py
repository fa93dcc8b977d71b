"""Shipping commands: ``fbn-prune push`` (a verified checkpoint to the Hugging Face Hub) and
``fbn-prune recipes`` (the ready recipes, wherever fbn_prune is installed).

Where recipes are found, first name wins:

1. ``$FBN_PRUNE_RECIPES`` (folders separated by ``:``);
2. ``recipes/`` beside the package, in a checkout of the repository (editable installs too);
3. ``share/fbn_prune/recipes`` under the installation's data prefix (``sys.prefix``, the user base
   for ``pip install --user``), where the wheel puts ``recipes/*.yaml`` as data files
   (``[tool.setuptools.data-files]`` in pyproject.toml); in the Docker image that is
   ``/opt/venv/share/fbn_prune/recipes``.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import UserError

RECIPES_ENV = "FBN_PRUNE_RECIPES"
DATA_SUBDIR = Path("share") / "fbn_prune" / "recipes"


# ----------------------------------------------------------------------------- recipes
def recipe_dirs() -> list[Path]:
    """Folders searched for recipes, in order (existing ones only, no duplicates)."""
    candidates: list[Path] = [Path(d) for d in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if d]
    candidates.append(Path(__file__).resolve().parent.parent / "recipes")
    prefixes = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix]
    try:
        prefixes.append(site.getuserbase())
    except Exception:  # pragma: no cover - site without a user base
        pass
    candidates += [Path(p) / DATA_SUBDIR for p in prefixes if p]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in seen:
            seen.append(c.resolve())
    return seen


@dataclass
class RecipeEntry:
    name: str
    path: Path
    model: str | None
    description: str
    hardware: str
    calibration: str
    error: str | None = None


def find_recipes() -> list[RecipeEntry]:
    """Every ``*.yaml`` recipe in :func:`recipe_dirs`, by name (the file stem); the first folder wins."""
    import yaml

    found: dict[str, RecipeEntry] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in found:
                continue
            try:
                data = yaml.safe_load(path.read_text()) or {}
                cal = data.get("calibration") or {}
                source = f"task {cal['task']}" if cal.get("task") else (cal.get("source") or "generated")
                found[path.stem] = RecipeEntry(path.stem, path, data.get("model"), str(data.get("description") or ""),
                                               str(data.get("hardware") or ""), source)
            except Exception as e:  # listed, with what is wrong
                found[path.stem] = RecipeEntry(path.stem, path, None, "", "", "", error=f"{type(e).__name__}: {e}")
    return sorted(found.values(), key=lambda r: r.name)


def find_recipe(name: str) -> RecipeEntry:
    """A recipe by name (``llama-3.1-8b-arc``, with or without ``.yaml``); UserError with the list otherwise."""
    stem = name[:-5] if name.endswith(".yaml") else name
    entries = find_recipes()
    for r in entries:
        if r.name == stem:
            return r
    import difflib

    close = difflib.get_close_matches(stem, [r.name for r in entries], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(r.name for r in entries) or 'none'}."
    raise UserError(f"no recipe named {name!r}{hint}")


@click.command("recipes")
@click.argument("name", required=False)
@click.option("--path", "show_path", is_flag=True, help="Print only the recipe file's path (with NAME).")
def recipes_command(name, show_path):
    """List the ready recipes, or print one (NAME) to copy and edit.

    \b
    Examples:
      fbn-prune recipes
      fbn-prune recipes llama-3.1-8b-arc > my-recipe.yaml
      fbn-prune prune --recipe "$(fbn-prune recipes llama-3.1-8b-arc --path)" --out llama-pruned
    """
    if name:
        entry = find_recipe(name)
        click.echo(str(entry.path) if show_path else entry.path.read_text(), nl=show_path)
        return
    if show_path:
        raise UserError("--path needs a recipe NAME.")
    entries = find_recipes()
    if not entries:
        raise UserError(f"no recipes found (searched: {', '.join(map(str, recipe_dirs())) or 'nothing'}); "
                        f"set ${RECIPES_ENV} to a folder of recipe YAMLs.")
    for r in entries:
        click.echo(f"{r.name}")
        if r.error:
            click.echo(f"  error        {r.error}")
            continue
        click.echo(f"  model        {r.model}")
        click.echo(f"  calibration  {r.calibration}")
        if r.description:
            click.echo(f"  what         {r.description}")
        if r.hardware:
            click.echo(f"  hardware     {r.hardware}")
        click.echo(f"  file         {r.path}")


# ----------------------------------------------------------------------------- push
@click.command("push")
@click.argument("folder", metavar="DIR")
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="The Hub model repository (created if missing).")
@click.option("--private", is_flag=True, help="Create the repository private (an existing one keeps its visibility).")
@click.option("--revision", metavar="BRANCH", help="Push to this branch (created from main if missing) [main].")
@click.option("--dry-run", is_flag=True,
              help="List exactly what would be uploaded (files and card); needs no token, uploads nothing.")
@click.option("--force", is_flag=True,
              help="Push even a folder that failed verification or its evaluation gate, or has no fbn_prune.json.")
@click.option("--require-eval", is_flag=True, help="Also refuse a folder without a passed evaluation gate.")
@click.option("--message", metavar="TEXT", help="Commit message [method, ratio and base model].")
def push_command(folder, repo_id, private, revision, dry_run, force, require_eval, message):
    """Upload a verified fbn_prune checkpoint DIR to the Hugging Face Hub as ORG/NAME.

    The token comes from HF_TOKEN or the huggingface_hub login (`hf auth login`); it is never
    printed, logged or written. Uploaded: the weights (safetensors), config, tokenizer, model card
    (README.md, its load snippet naming ORG/NAME), recipe.yaml, fbn_prune.json and the eval report;
    pickles, hidden files and anything else are skipped (the listing says which and why).

    \b
    Refused without --force: no fbn_prune.json (exit 2), failed verification (exit 4), a failed
    evaluation gate (exit 3), invalid card metadata (exit 2). Hub errors: exit 5.

    \b
    Examples:
      fbn-prune push smollm2-pruned --repo-id my-org/SmolLM2-135M-Instruct-fbn20 --dry-run
      HF_TOKEN=... fbn-prune push smollm2-pruned --repo-id my-org/SmolLM2-135M-Instruct-fbn20 --private
    """
    from . import hub
    from .card import base_license

    endpoint = os.environ.get("HF_ENDPOINT") or None
    lookup = lambda hub_id: base_license(hub_id, online=True, endpoint=endpoint)  # noqa: E731
    try:
        plan = hub.plan(folder, repo_id, revision=revision, private=private, force=force,
                        require_eval=require_eval, license_lookup=lookup)
    except hub.PushRefused as e:
        if getattr(e, "plan", None) is not None:
            click.echo(hub.describe(e.plan, dry_run=dry_run))
        raise
    click.echo(hub.describe(plan, dry_run=dry_run))
    if dry_run:
        source = hub.token_source()
        click.echo(f"token: {'from ' + source if source else 'none found (set HF_TOKEN or run `hf auth login`)'}")
        click.echo("dry run: nothing was uploaded.")
        return
    info = hub.push(plan, endpoint=endpoint, message=message)
    click.echo(f"pushed: {getattr(info, 'commit_url', None) or info}")
