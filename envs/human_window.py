"""The ``render_mode="human"`` window shared by the environments (OpenCV highgui).

On a machine without a display (a CI box, a cluster node) OpenCV's Qt backend aborts the
process when it opens a window, so without a display the frame is dropped and this is
logged once instead: human rendering is then a no-op rather than a crash.
"""

from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

log = logging.getLogger(__name__)
_warned_headless = False


def display_available() -> bool:
    """Whether an OpenCV window can be opened (always assumed off Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_frame(owner: object, frame: np.ndarray) -> None:
    """Show an RGB ``frame`` in ``owner``'s window, creating it on first use."""
    global _warned_headless
    if not display_available():
        if not _warned_headless:
            log.info("render_mode='human' without a display (DISPLAY unset): frames are not shown")
            _warned_headless = True
        return
    name = getattr(owner, "_window", None) or f"ciper {type(owner).__name__} {id(owner)}"
    owner._window = name
    cv2.imshow(name, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cv2.waitKey(1)


def close_window(owner: object) -> None:
    name = getattr(owner, "_window", None)
    if name is not None:
        cv2.destroyWindow(name)
        owner._window = None
