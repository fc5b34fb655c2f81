"""Reading a 3DIEBench folder: view pairs for training, probe views for the evaluation.

A :class:`BenchmarkSplit` holds the objects of one split list (``<split>_images.npy``) with
their labels and view counts. Opening it checks every object folder (a missing view is a
``FileNotFoundError`` naming the file) and reads one latent for the dataset's latent length;
views and latents are read when drawn, so a corrupt JPEG or a latent of another length is a
``ValueError`` naming the file then. Both are also :class:`conf.errors.UserError`s, which
the console scripts print as one line. Pairs follow SIE's loader: two different views of one
object, the relative rotation between them (and the other latents' change, per action set)
as the target. The views of an object have no time order, so a method's pair offset only
decides whether a pair is one view twice (offset 0, SimCLR here), two different views
(offset >= 1) or either (offsets 0..k). :func:`read_probe_views` gives the evaluation the
views of a split as :class:`agent.probe_views.ProbeViews`: each object one "episode".
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from agent.probe_views import ProbeViews, episode_seed, limit_objects
from agent.view_pairs import ViewPairs
from conf.errors import UserError
from envs import iebench_layout, iebench_state


class MissingBenchmarkFile(UserError, FileNotFoundError):
    """A file of a 3DIEBench folder (a view, a latent, a split list) is missing; the message names it."""


class BadBenchmarkFile(UserError, ValueError):
    """A file of a 3DIEBench folder cannot be used (a corrupt JPEG, a latent of another length ...); the message names it."""


@contextlib.contextmanager
def benchmark_file_errors() -> Iterator[None]:
    """The layout's file errors (``envs.iebench_layout``) as the user errors above."""
    try:
        yield
    except FileNotFoundError as error:
        raise MissingBenchmarkFile(str(error)) from None
    except ValueError as error:
        raise BadBenchmarkFile(str(error)) from None


class BenchmarkSplit:
    """The objects of split ``split`` of the 3DIEBench folder ``root``, views at ``image_size``.

    ``object_index`` of a pair or probe view is the object's row in the split's list, its
    ``category`` the list's label.
    """

    def __init__(self, root: str | Path, split: str, image_size: int) -> None:
        self.root = Path(root).expanduser().resolve()
        self.split, self.image_size = split, int(image_size)
        with benchmark_file_errors():
            objects, self.labels = iebench_layout.split_lists(self.root, split)
            if not objects:
                raise ValueError(f"{self.root}: split {split!r} lists no object")
            self.folders = [self.root / entry for entry in objects]
            self.view_counts = np.array([iebench_layout.view_count(folder) for folder in self.folders], dtype=np.int64)
            first = iebench_layout.latent_path(self.folders[0], 0)
            self.latent_length = iebench_layout.read_latent(first).size
        if self.latent_length < iebench_state.STATE_DIM:
            raise BadBenchmarkFile(f"{first}: latent of length {self.latent_length}: expected at least {iebench_state.STATE_DIM} "
                                   f"values ({', '.join(iebench_state.STATE_FIELDS)})")  # fmt: skip

    def __len__(self) -> int:
        return len(self.folders)

    def states(self, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
        """Latent states (N, STATE_DIM) of view ``views[i]`` of object ``rows[i]``."""
        with benchmark_file_errors():
            latents = [
                iebench_layout.read_latent(iebench_layout.latent_path(self.folders[r], k), self.latent_length)
                for r, k in zip(rows.tolist(), views.tolist(), strict=True)
            ]
        return np.stack(latents)[:, : iebench_state.STATE_DIM]

    def views(self, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
        """RGB uint8 views (N, S, S, 3) ``views[i]`` of objects ``rows[i]``."""
        with benchmark_file_errors():
            return np.stack([
                iebench_layout.read_view(iebench_layout.image_path(self.folders[r], k), self.image_size)
                for r, k in zip(rows.tolist(), views.tolist(), strict=True)
            ])  # fmt: skip

    def sample_pairs(
        self, batch_size: int, rng: np.random.Generator, min_offset: int, max_offset: int, action_set: str
    ) -> ViewPairs:
        """``batch_size`` pairs, each of one object (distinct objects where the split has
        enough): one view twice when ``max_offset`` is 0, two independent draws when
        ``min_offset`` is 0, else two different views (SIE's ``np.random.choice(n, 2, replace=False)``)."""
        rows = rng.choice(len(self), size=batch_size, replace=len(self) < batch_size)
        counts = self.view_counts[rows]
        first = rng.integers(0, counts)
        if max_offset == 0:
            second = first
        elif min_offset == 0:
            second = rng.integers(0, counts)
        else:
            if (counts < 2).any():
                folder = self.folders[int(rows[np.argmax(counts < 2)])]
                raise BadBenchmarkFile(f"{folder}: one view; pairs of two different views need at least 2 per object")
            second = (first + rng.integers(1, counts)) % counts
        state_a, state_b = self.states(rows, first), self.states(rows, second)
        return ViewPairs(
            view_a=self.views(rows, first),
            view_b=self.views(rows, second),
            relative_action=iebench_state.relative_action(state_a, state_b, action_set),
            state_a=state_a,
            state_b=state_b,
            object_index=rows.astype(np.int64),
            category=self.labels[rows],
            offset=(first != second).astype(np.int64),
        )

    def probe_views(self, views_per_object: int, seed: int, objects_limit: int | None = None) -> ProbeViews:
        """``views_per_object`` views (all where an object has fewer) of every object, or of
        ``objects_limit`` evenly spaced ones; each object's views are drawn from
        ``agent.probe_views.episode_seed(seed, row, 0)`` and form one episode, in view order."""
        rows, picks = [], []
        for row in limit_objects(np.arange(len(self)), objects_limit).tolist():
            count = int(self.view_counts[row])
            rng = np.random.default_rng(episode_seed(seed, row, 0))
            chosen = np.sort(rng.choice(count, size=min(views_per_object, count), replace=False))
            rows.append(np.full(chosen.size, row))
            picks.append(chosen)
        row_of_view, view_of_object = np.concatenate(rows), np.concatenate(picks)
        episode = np.concatenate([np.full(r.size, i) for i, r in enumerate(rows)])
        step = np.concatenate([np.arange(r.size) for r in rows])
        arrays = {
            "views": self.views(row_of_view, view_of_object),
            "state": self.states(row_of_view, view_of_object),
            "object_index": row_of_view.astype(np.int64),
            "category": self.labels[row_of_view],
            "episode": episode.astype(np.int64),
            "step": step.astype(np.int64),
        }
        for array in arrays.values():
            array.setflags(write=False)
        return ProbeViews(**arrays)


@functools.lru_cache(maxsize=4)
def open_split(root: str, split: str, image_size: int) -> BenchmarkSplit:
    """The checked :class:`BenchmarkSplit`, kept per process (a check before a run and the
    run itself open the same one; scanning 50,000 object folders takes a while)."""
    return BenchmarkSplit(root, split, image_size)


@functools.lru_cache(maxsize=4)
def read_probe_views(root: str, split: str, image_size: int, views_per_object: int, seed: int,
                     objects_limit: int | None = None) -> ProbeViews:  # fmt: skip
    """The probe views of ``split`` (see :meth:`BenchmarkSplit.probe_views`), kept per
    process like the rendered ones: every method of a report sees the same views."""
    return open_split(root, split, image_size).probe_views(views_per_object, seed, objects_limit)
