"""``fbn-prune tasks``: list the offline lm-eval tasks, or write them as a folder for ``lm_eval --include_path``."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from fbn_prune.errors import UserError
from fbn_prune.texts.tasks import registry as T
from fbn_prune.texts.tasks.render import render_to


@click.command("tasks")
@click.option("--render", "render_dir", type=str, metavar="DIR",
              help="Write the offline task YAMLs (absolute data paths) and their converted data into DIR, "
                   "for `lm_eval --include_path DIR`.")
@click.option("--data-dir", type=str, metavar="D",
              help="Folder with the task data files [$FBN_PRUNE_DATA].")
@click.option("--overwrite", is_flag=True, help="Replace an existing DIR.")
def tasks_command(render_dir: str | None, data_dir: str | None, overwrite: bool) -> None:
    """List the lm-eval tasks fbn_prune runs offline and whether their data is present; with
    --render, write them as a task folder plain lm_eval can use.

    \b
    Example:
      fbn-prune tasks --render ./fbn-tasks --data-dir ./data
      lm_eval --model hf --model_args pretrained=./pruned --include_path ./fbn-tasks --tasks piqa,arc_easy
    """
    if render_dir is None:
        try:
            data: Path | None = T.data_dir(data_dir)
        except UserError:  # no folder found: every task is missing its files
            if data_dir:
                raise
            data = None
        for name in T.LOCAL_TASKS:
            missing = T.missing_files(data, name)
            click.echo(f"{name:16s} {'ready' if not missing else 'missing ' + ', '.join(missing)}"
                       + (f" ({data})" if data is not None and not missing else ""))
        return
    data = T.data_dir(data_dir)
    target = Path(render_dir).expanduser()
    if target.exists():
        if not overwrite:
            raise UserError(f"{render_dir} already exists; pass --overwrite to replace it.")
        if not target.is_dir():
            raise UserError(f"{render_dir} exists and is not a folder.")
    old = target.with_name(f".{target.name}.old") if target.exists() else None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    try:
        names = render_to(target, data)
    except BaseException:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    click.echo(f"wrote {', '.join(names)} to {target.resolve()}")
    click.echo(f"use: lm_eval --include_path {target.resolve()} --tasks {','.join(names)} ...")
