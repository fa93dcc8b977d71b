"""``python -m fbn_prune``: the fbn-prune command."""

from fbn_prune.cli.entry import main

main()
