"""Per-channel image standardisation constants shared by training and evaluation.

Views are rendered scenes, not ImageNet photos, so a fixed mid-grey centre and a spread
that maps [0, 1] to about [-2, 2] is used rather than dataset statistics: the constants
never depend on which objects a run happened to see.
"""

IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
