"""Writing the pruned model: surgery, checkpoint files, provenance, verification, GGUF."""
