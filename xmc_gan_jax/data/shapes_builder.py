"""TFDS builder `captioned_shapes`: the embedded default dataset, generated locally (no download).

    import tensorflow_datasets as tfds
    from xmc_gan_jax.data import shapes_builder  # registers the builder
    ds = tfds.load("captioned_shapes/32px", split="train", data_dir=...)           # 20,000 train, 2,000 val
    builder = shapes_builder.CaptionedShapes(config=shapes_builder.make_config(32, num_train=64,
                                             num_validation=16), data_dir=...)     # custom sizes

Each example (see `shapes_scene` for the scene model): `image` uint8 [S, S, 3] (PNG), `image/id` int64 (index
within its split), `captions` (5 distinct paraphrases, each describing every object) and `objects`, a sequence
of {color, shape, size, row, col} int64 in row-major cell order, with names in `shapes_scene.COLOR_NAMES`,
`SHAPE_NAMES`, `SIZE_NAMES` and row/col in 0..2 (row 0 = top). Example i of a split depends only on (seed,
split, i), so the data is identical whatever the order or sharding of generation.
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from xmc_gan_jax.data import shapes_scene

_SPLIT_CODES = {"train": 0, "validation": 1}


@dataclasses.dataclass(eq=False)
class CaptionedShapesConfig(tfds.core.BuilderConfig):
  """Image size (px), split sizes (images), seed and scene statistics of one variant."""
  image_size: int = 64
  num_train: int = 20_000
  num_validation: int = 2_000
  seed: int = 0
  object_count_probs: tuple[float, ...] = shapes_scene.DEFAULT_OBJECT_COUNT_PROBS
  jitter: float = shapes_scene.DEFAULT_JITTER
  num_captions: int = 5

  def validate(self) -> None:
    """Raises ValueError on settings that cannot produce a dataset."""
    if self.image_size < 12:
      raise ValueError(f"image_size must be >= 12 px (cells of >= 4 px), got {self.image_size}.")
    if self.num_train < 0 or self.num_validation < 0:
      raise ValueError(f"Split sizes must be >= 0, got {self.num_train} / {self.num_validation}.")
    if self.num_captions < 1:
      raise ValueError(f"num_captions must be >= 1, got {self.num_captions}.")
    shapes_scene.validate_count_probs(self.object_count_probs)
    if not 0.0 <= self.jitter <= 1.0:
      raise ValueError(f"jitter must be in [0, 1], got {self.jitter}.")


def make_config(image_size: int = 64, num_train: int = 20_000, num_validation: int = 2_000, seed: int = 0,
                object_count_probs: tuple[float, ...] = shapes_scene.DEFAULT_OBJECT_COUNT_PROBS,
                jitter: float = shapes_scene.DEFAULT_JITTER, num_captions: int = 5) -> CaptionedShapesConfig:
  """A custom variant, named after its settings (e.g. `32px_t64_v16_s0_p40-40-20_j50_c5`) so that variants
  never share files in a data_dir."""
  probs = "-".join(str(round(100 * p)) for p in object_count_probs)
  name = (f"{image_size}px_t{num_train}_v{num_validation}_s{seed}_p{probs}_j{round(100 * jitter)}"
          f"_c{num_captions}")
  config = CaptionedShapesConfig(name=name, description="custom captioned shapes", image_size=image_size,
                                 num_train=num_train, num_validation=num_validation, seed=seed,
                                 object_count_probs=tuple(float(p) for p in object_count_probs), jitter=jitter,
                                 num_captions=num_captions)
  config.validate()
  return config


def generate_example(config: CaptionedShapesConfig, split: str, index: int) -> dict:
  """Example `index` of `split` as the builder stores it (numpy image, list of captions, dict of object lists)."""
  if split not in _SPLIT_CODES:
    raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}.")
  rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
  objects = shapes_scene.sample_scene(rng, config.object_count_probs, config.jitter)
  return {
      "image": shapes_scene.render_scene(objects, config.image_size),
      "image/id": index,
      "captions": shapes_scene.make_captions(objects, rng, config.num_captions),
      "objects": shapes_scene.objects_to_arrays(objects),
  }


class CaptionedShapes(tfds.core.GeneratorBasedBuilder):
  """Captioned 3x3-grid shapes scenes, generated locally and deterministically from the config's seed."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version: 8 colours, 3 shapes, 2 sizes, 1-3 objects, 5 captions per image."}
  BUILDER_CONFIGS = [
      CaptionedShapesConfig(name="64px", description="64x64 images, 20,000 train / 2,000 validation.",
                            image_size=64),
      CaptionedShapesConfig(name="32px", description="32x32 images, 20,000 train / 2,000 validation.",
                            image_size=32),
  ]
  DEFAULT_CONFIG_NAME = "64px"

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Captioned shapes: 1-3 coloured circles, squares and triangles (small or large) on distinct "
                     "cells of a 3x3 grid, with paraphrased captions that describe every object. Colours: "
                     f"{', '.join(shapes_scene.COLOR_NAMES)}; shapes: {', '.join(shapes_scene.SHAPE_NAMES)}; "
                     f"sizes: {', '.join(shapes_scene.SIZE_NAMES)}; row/col 0..2 from the top left."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), dtype=np.uint8, encoding_format="png"),
            "image/id": np.int64,
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "objects": tfds.features.Sequence({key: np.int64 for key in ("color", "shape", "size", "row",
                                                                          "col")}),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is generated locally
    self.builder_config.validate()
    return {split: self._generate_examples(split) for split in _SPLIT_CODES}

  def _generate_examples(self, split: str):
    config = self.builder_config
    count = config.num_train if split == "train" else config.num_validation
    for index in range(count):
      yield index, generate_example(config, split, index)
