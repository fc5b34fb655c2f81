"""The learner, the one training loop, its checkpoints, logs, devices and distributed plumbing."""
