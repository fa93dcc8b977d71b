"""The run's settings: the Recipe, layouts, gate, limits and data folders, importing no business code."""
