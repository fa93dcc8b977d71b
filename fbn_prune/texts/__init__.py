"""Where every text comes from: files, the built-in sample, Hub datasets, generated text and lm-eval tasks.

Where every text comes from: calibration files, Hub datasets, the built-in sample, generated text,
and lm-eval task documents (with the offline task templates)."""
