"""Checks a config against the mesh before anything is built, with errors that say what to change."""
import ml_collections

from xmc_gan_jax.models import text_encoder

_DATASETS = ("random", "shapes", "coco", "ln_coco", "ln_openimages")


def validate(config: ml_collections.ConfigDict, batch_shards: int, process_count: int = 1) -> None:
  """Raises ValueError for batch sizes that cannot be split or sharded, and for unknown choices.

  `batch_shards` is the number of devices the example axis is split over (mesh data × fsdp).
  """
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
