"""fbn_prune: prune LLM feed-forward neurons outside a task's functional networks.

Pipeline (one direction): capture -> decompose -> select -> prune -> export -> evaluate.
"""

__version__ = "0.1.0"
