"""Healing a pruned checkpoint by knowledge distillation from its base model."""
