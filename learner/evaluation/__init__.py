"""Frozen-encoder evaluation: features, scores, references, the shortcut diagnostic, plots."""
