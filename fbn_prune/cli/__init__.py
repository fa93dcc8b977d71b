"""The fbn-prune command line: one module per command group, the group and entry point in main and entry."""
