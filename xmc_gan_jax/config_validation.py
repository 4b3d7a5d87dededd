"""Checks a config against the mesh before anything is built, with errors that say what to change."""
import ml_collections

from xmc_gan_jax.models import text_encoder

_DATASETS = ("random", "shapes", "coco", "ln_coco", "ln_openimages")


# (field, smallest valid value, a valid example, what the field is). A field a config lacks (an old checkpoint's saved
# config) is not checked.
COUNTS = (
    ("batch_size", 1, 16, "global examples per train step"),
    ("total_steps", 1, 1000, "train steps to run"),
    ("log_every_steps", 1, 50, "steps between logged scalars"),
    ("checkpoint_every_steps", 1, 500, "steps between checkpoints"),
    ("sample_every_steps", 1, 500, "steps between sample grids"),
    ("keep_checkpoints", 1, 3, "checkpoints orbax keeps (0 would keep none)"),
    ("num_sample_images", 1, 16, "images in the training sample grids"),
    ("max_train_seconds", 0, 3600, "training wall-time limit, 0 = none"),
    ("optim.d_steps_per_g_step", 1, 2, "sub-batches per train step"),
    ("model.z_dim", 1, 128, "noise dimension"),
    ("model.gf_dim", 1, 32, "generator base width"),
    ("model.df_dim", 1, 32, "discriminator base width"),
    ("model.cond_size", 1, 16, "word-region attention resolution"),
    ("text_encoder.max_length", 3, 17, "tokens per caption including [CLS] and [SEP]"),
    ("dataset.shuffle_buffer", 0, 1000, "shuffle buffer size"),
    ("eval.every_steps", 0, 1000, "steps between evaluations, 0 = off"),
    ("eval.num_images", 2, 256, "images per evaluation (FID needs a covariance)"),
    ("eval.batch_size", 1, 32, "images per evaluation batch"),
    ("eval.standalone_num_images", 0, 30000, "--mode=eval images, 0 = eval.num_images"),
    ("eval.repeats", 1, 1, "standalone evaluation repeats"),
    ("eval.poll_seconds", 0, 60, "--mode=eval seconds between looks for checkpoints"),
    ("eval.follow_timeout_seconds", 0, 0, "--mode=eval give-up time, 0 = never"),
)


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return None
    node = node[part]
  return node


def check_counts(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field and a valid value for every count, interval or size in `COUNTS` that is
  below its minimum or not a number (e.g. log_every_steps=0 would divide by zero at the first step)."""
  for field, minimum, example, what in COUNTS:
    value = _lookup(config, field)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < minimum:
      raise ValueError(f"{field}={value!r} ({what}) must be >= {minimum}; set e.g. --config.{field}={example}.")
    if isinstance(value, float) and minimum >= 1 and value != int(value):
      raise ValueError(f"{field}={value!r} ({what}) must be a whole number; set e.g. --config.{field}={example}.")


def validate(config: ml_collections.ConfigDict, batch_shards: int, process_count: int = 1) -> None:
  """Raises ValueError for batch sizes that cannot be split or sharded, and for unknown choices.

  `batch_shards` is the number of devices the example axis is split over (mesh data × fsdp). Every count, interval
  and size is checked first (`check_counts`), so a 0 or a negative value fails here, not after a long compile.
  """
  check_counts(config)
  k = int(config.optim.d_steps_per_g_step)
  batch = int(config.batch_size)
  if k < 1:
    raise ValueError(f"optim.d_steps_per_g_step must be >= 1, got {k}.")
  if batch % k:
    raise ValueError(
        f"batch_size={batch} is not divisible by optim.d_steps_per_g_step={k}: every train step splits the "
        f"global batch into {k} equal sub-batches (D-only updates, then the joint D+G update). "
        f"Use a multiple of {k}, e.g. --config.batch_size={k * max(1, batch // k)}.")
  sub = batch // k
  if sub % batch_shards:
    raise ValueError(
        f"Each sub-batch has batch_size / d_steps_per_g_step = {sub} examples, which cannot be split evenly over "
        f"the {batch_shards} devices of the mesh's batch axes. Use a batch_size that is a multiple of "
        f"{k * batch_shards} (e.g. --config.batch_size={k * batch_shards * max(1, sub // batch_shards)}), "
        "or change --config.mesh.data.")
  if batch % process_count:
    raise ValueError(f"batch_size={batch} must be divisible by the number of processes ({process_count}).")
  for name, group in (("model.batch_norm_group_size", config.model.batch_norm_group_size),
                      ("loss.contrastive_group_size", config.loss.contrastive_group_size)):
    if group < 0 or (group and sub % group):
      raise ValueError(f"{name}={group} must be 0 (whole sub-batch) or divide the sub-batch size {sub}.")
  if config.dataset.name not in _DATASETS:
    raise ValueError(f"dataset.name={config.dataset.name!r} is not one of {_DATASETS}.")
  if config.text_encoder.pooling not in text_encoder.POOLINGS:
    raise ValueError(f"text_encoder.pooling={config.text_encoder.pooling!r} is not one of {text_encoder.POOLINGS}.")
  if config.text_encoder.features not in text_encoder.FEATURES:
    raise ValueError(f"text_encoder.features={config.text_encoder.features!r} is not one of "
                     f"{text_encoder.FEATURES}.")
  if config.model.image_size not in (32, 64, 128, 256):
    raise ValueError(f"model.image_size={config.model.image_size} must be one of 32, 64, 128, 256.")


def check_finite_text_params(params, folder: str) -> None:
  """Raises ValueError naming the text encoder `folder` when any of its weights is NaN or infinite (a damaged
  weights file would otherwise be reported, thousands of steps later, as a training divergence)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    values = np.asarray(jax.device_get(leaf))
    if values.dtype.kind == "f" and not np.isfinite(values).all():
      bad = int(values.size - np.isfinite(values).sum())
      raise ValueError(
          f"The text encoder in {folder} has {bad} non-finite weights (NaN or inf) in "
          f"{jax.tree_util.keystr(path)}: its weights file is damaged. Re-download it or set "
          f"--config.text_encoder.path to a good Hugging-Face-format BERT folder.")
