"""Models in: resolving a model name, loading and placing it, identifying it, architecture adapters."""
