"""Choosing the channels to keep: the method registry, scores, budgets and compensation."""
