"""What the learner trains on: pair sources, targets and labels, augmentations, image input."""
