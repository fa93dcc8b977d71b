"""Reading results back: a checkpoint's or a networks artifact's summary (describe) and pictures (plot)."""
