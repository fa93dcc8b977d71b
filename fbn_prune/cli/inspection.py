"""``fbn-prune inspect``: summarise a checkpoint, a networks artifact or a model folder, and draw it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fbn_prune.errors import UserError
from fbn_prune.inspection.describe import describe_folder
from fbn_prune.inspection.plot import plot


@click.command("inspect")
@click.argument("path", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
@click.option("--plot", "plot_file", type=str, metavar="FILE",
              help="Also draw where the networks live / what was kept (layer x channel map, widths per layer) "
                   "to FILE (.png, .svg or .pdf).")
def inspect_command(path, as_json, plot_file):
    """Summarise a pruned checkpoint, a networks artifact, or any model folder."""
    if plot_file and Path(plot_file).expanduser().is_dir():
        raise UserError(f"--plot {plot_file} is a folder; name the picture file (.png, .svg or .pdf).")
    text, record = describe_folder(path)
    click.echo(json.dumps(record, indent=1) if as_json else text)
    if plot_file:
        click.echo(f"plot written to {plot(path, plot_file)}", err=as_json)
