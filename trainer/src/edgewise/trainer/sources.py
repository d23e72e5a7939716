"""Where training data comes from, for ``train`` and ``compare`` alike: one loader.

A :class:`DataSource` holds what the command line says (a built-in data set, a CSV of
rows or of raw samples, an image folder) and loads it as a table (classical models) or
as tensors (networks; windows and images), with the same errors everywhere.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgewise.edge.errors import EdgewiseError
from edgewise.trainer.registry import WINDOW_DATASETS, check_dataset

if TYPE_CHECKING:
    from edgewise.trainer.datasets import Dataset
    from edgewise.trainer.tensors import TensorData


@dataclass(frozen=True)
class DataSource:
    """One of ``dataset``, ``csv`` or ``images``, and how to read it."""

    dataset: str | None = None
    csv: str | None = None
    images: str | None = None
    target: str | None = None
    task: str | None = None
    window: int | None = None  # a CSV of raw samples: rows per window
    stride: int | None = None
    image_size: int = 32
    grayscale: bool = False
    seed: int = 0
    drop: tuple[str, ...] = ()  # CSV columns that are not features (ids, notes)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.dataset, self.csv, self.images)) != 1:
            raise EdgewiseError("give one data source: --dataset, --csv or --images")
        if self.dataset is not None:
            check_dataset(self.dataset)
            if self.target:
                raise EdgewiseError(
                    "--target goes with --csv; built-in data sets know their target"
                )
        if self.drop and (self.csv is None or self.window is not None):
            raise EdgewiseError("--drop goes with --csv FILE --target LABEL (a table)")
        if self.window is not None and self.csv is None:
            raise EdgewiseError("--window goes with --csv FILE (raw samples, a column per channel)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DataSource:
        """The source the parsed command-line arguments name."""
        return cls(
            dataset=args.dataset,
            csv=args.csv,
            images=args.images,
            target=args.target,
            task=getattr(args, "task", None),
            window=getattr(args, "window", None),
            stride=getattr(args, "stride", None),
            image_size=getattr(args, "image_size", 32),
            grayscale=getattr(args, "grayscale", False),
            seed=getattr(args, "seed", 0),
            drop=tuple(getattr(args, "drop", None) or ()),
        )

    @property
    def is_tensors(self) -> bool:
        """Windows or images by nature (rows otherwise; digits are both: see tensors())."""
        return bool(self.images or self.window or self.dataset in WINDOW_DATASETS)

    def table(self) -> Dataset:
        """Rows of raw features and a target, for the classical models."""
        from edgewise.trainer.datasets import load_builtin, load_csv

        if self.dataset is not None:
            return load_builtin(self.dataset)
        if self.csv is None or self.is_tensors:
            raise EdgewiseError("this source holds windows or images, not rows")
        if not self.target:
            raise EdgewiseError("--csv needs --target COLUMN (the label to learn)")
        return load_csv(self.csv, self.target, self.task, self.drop)

    def tensors(self, digits_as_images: bool = True) -> TensorData:
        """Windows, images, or (for the MLP) rows as a float matrix."""
        from edgewise.trainer.tensors import (
            from_tabular,
            load_digits_images,
            load_image_folder,
            load_vibration,
            load_window_csv,
        )

        if self.images is not None:
            return load_image_folder(self.images, self.image_size, self.grayscale)
        if self.csv is not None and self.window is not None:
            return load_window_csv(
                self.csv, self.window, self.stride or self.window, self.target or "label"
            )
        if self.dataset == "vibration":
            return load_vibration(seed=self.seed)
        if self.dataset == "digits" and digits_as_images:  # its 8x8 images
            return load_digits_images()
        return from_tabular(self.table())
