"""Learner: encoders, heads, losses, augmentations, training loop, evaluation and reports."""
