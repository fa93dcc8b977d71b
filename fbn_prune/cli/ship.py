"""The shipping commands: fbn-prune push and fbn-prune recipes.

Shipping commands: ``fbn-prune push`` (a verified checkpoint to the Hugging Face Hub) and
``fbn-prune recipes`` (the ready recipes: package data, plus ``$FBN_PRUNE_RECIPES``; see
:mod:`fbn_prune.config.recipe`).
"""

from __future__ import annotations

import os

import click

from fbn_prune.config.recipe import RECIPES_ENV, find_ready, ready_recipes, recipe_dirs
from fbn_prune.errors import UserError
from fbn_prune.ship.files import PushRefused
from fbn_prune.ship.hub import base_license, token_source
from fbn_prune.ship.push_plan import describe_push_plan, plan_push
from fbn_prune.ship.upload import push


@click.command("recipes")
@click.argument("name", required=False)
@click.option("--path", "show_path", is_flag=True, help="Print only the recipe file's path (with NAME).")
def recipes_command(name, show_path):
    """List the ready recipes, or print one (NAME) to copy and edit.

    \b
    Examples:
      fbn-prune recipes
      fbn-prune recipes llama-3.1-8b-arc > my-recipe.yaml
      fbn-prune prune --recipe llama-3.1-8b-arc --out llama-pruned
    """
    if name:
        entry = find_ready(name)
        click.echo(str(entry.path) if show_path else entry.path.read_text(), nl=show_path)
        return
    if show_path:
        raise UserError("--path needs a recipe NAME.")
    entries = ready_recipes()
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
    endpoint = os.environ.get("HF_ENDPOINT") or None
    lookup = lambda hub_id: base_license(hub_id, online=True, endpoint=endpoint)  # noqa: E731
    try:
        plan = plan_push(folder, repo_id, revision=revision, private=private, force=force,
                         require_eval=require_eval, license_lookup=lookup)
    except PushRefused as e:
        if getattr(e, "plan", None) is not None:
            click.echo(describe_push_plan(e.plan, dry_run=dry_run))
        raise
    click.echo(describe_push_plan(plan, dry_run=dry_run))
    if dry_run:
        source = token_source()
        click.echo(f"token: {'from ' + source if source else 'none found (set HF_TOKEN or run `hf auth login`)'}")
        click.echo("dry run: nothing was uploaded.")
        return
    info = push(plan, endpoint=endpoint, message=message)
    click.echo(f"pushed: {getattr(info, 'commit_url', None) or info}")
