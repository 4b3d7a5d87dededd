"""tf.data input pipelines: per-process shard, decode, resize, flip, caption choice, tokenise, batch, prefetch.

Host batches follow DESIGN.md §5: `image` uint8 [B, S, S, 3], `token_ids` / `token_mask` int32 [B, T], plus
host-only `caption` (bytes [B]) and `image_id` (bytes [B]); shapes batches add `objects/{color,shape,size,row,col}`
int32 [B, 3] (padded with -1) and `num_objects` int32 [B]; eval batches add `valid` int32 [B] (0 = padding).
B is the process-local batch (global batch // process count).

Training stream (per process, infinite). Epoch e reads the process's shard in its stored order (TFDS writes
examples hash-shuffled), shuffles it with a buffer seeded by (seed, process, e), and yields exactly
`steps_per_epoch = records // B` batches of valid examples (it wraps around to the epoch's start if skipped
examples leave too few). Per-example randomness (caption choice, flip) is stateless, keyed by
(seed, process, e, record index), so it does not depend on the shuffle. Resuming at step N therefore rebuilds
the same stream: it starts at epoch N // steps_per_epoch and drops the first (N % steps_per_epoch)·B valid
examples of that epoch before resizing and tokenising (those are still read and decoded: at most one epoch).
The stream is a function of (config.seed, process index and count, the data) only, provided nothing calls
tf.random.set_seed (tf.data would mix that seed in; a warning is logged).

Bad input never stops a run: undecodable images, examples whose captions are all empty, images with a side
under 8 px and unreadable TFRecord records (of a corrupt, truncated, empty or missing shard file) are skipped
and counted; captions longer than max_length tokens are truncated and counted. Counts are read from the iterator
(`.stats()`, keys STAT_KEYS) and logged; each damaged shard file is also named in a warning. TensorFlow cannot
resynchronise inside a damaged TFRecord file, so every record of a shard from the first bad one on is lost (and
counted). A split of which nothing is readable fails with an error naming the dataset, split and data_dir.
Captions are bytes; invalid UTF-8 is replaced (U+FFFD) by the tokenizer, never an error.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
from typing import Any, Callable, Iterator

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from xmc_gan_jax.data import coco
from xmc_gan_jax.data import localized_narratives
from xmc_gan_jax.data import tokenizer as tokenizer_lib

SKIP_KEYS = ("skipped_undecodable", "skipped_empty_caption", "skipped_too_small", "skipped_corrupt_records")
STAT_KEYS = SKIP_KEYS + ("truncated_caption",)
MIN_IMAGE_SIDE = 8  # px; smaller images are skipped
MAX_OBJECTS = 3  # objects per captioned-shapes image
SHAPES_OBJECT_FIELDS = ("color", "shape", "size", "row", "col")
_OK, _UNDECODABLE, _EMPTY_CAPTION, _TOO_SMALL, _CORRUPT = 0, 1, 2, 3, 4  # a status i > 0 counts in SKIP_KEYS[i-1]
_END = 5  # the eval stream's last row (a padding row): carries the final skip counts
_AUTOTUNE = tf.data.AUTOTUNE
# Graph-level seed tf.data combines with op seeds while tf.random.set_seed() has not been called.
_TF_DEFAULT_GRAPH_SEED = 87654321


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How a config dataset name maps onto a TFDS builder and onto standard records.

  `standardize` maps one TFDS example (image left encoded) to {"image": string [], "captions": string [N],
  "image_id": string [], **extras} where extras are fixed-shape tensors passed through to the batch.
  """
  tfds_name: str
  decoders: Any
  standardize: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]
  split_aliases: dict[str, str] = dataclasses.field(default_factory=dict)
  prepare_hint: str = ""
  # Prepared on first use by single-process runs (shapes: generated locally; Localized Narratives: from
  # config.dataset.manual_dir). COCO is not: its 40 GB download belongs in a separate `tfds build` step.
  auto_prepare: bool = False
  needs_manual_dir: bool = False

  def resolve_split(self, split: str) -> str:
    return self.split_aliases.get(split, split)


def _standardize_shapes(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """captioned_shapes example → standard record with objects padded to MAX_OBJECTS (-1 = no object)."""
  objects = example["objects"]
  num = tf.shape(objects["color"])[0]
  check = tf.debugging.Assert(num <= MAX_OBJECTS, ["captioned_shapes example has more than 3 objects:", num])
  out = {"image": example["image"], "captions": example["captions"],
         "image_id": tf.strings.as_string(example["image/id"])}
  with tf.control_dependencies([check]):
    out["num_objects"] = tf.cast(tf.identity(num), tf.int32)
  for field in SHAPES_OBJECT_FIELDS:
    values = tf.cast(objects[field][:MAX_OBJECTS], tf.int32)
    padded = tf.pad(values, [[0, MAX_OBJECTS - tf.shape(values)[0]]], constant_values=-1)
    out[f"objects/{field}"] = tf.ensure_shape(padded, [MAX_OBJECTS])
  return out


def dataset_spec(name: str, image_size: int) -> DatasetSpec:
  """The DatasetSpec for config.dataset.name (shapes | coco | ln_coco | ln_openimages)."""
  if name == "coco":
    return DatasetSpec(coco.TFDS_NAME, coco.decoders(), coco.standardize, dict(coco.SPLIT_ALIASES),
                       coco.PREPARE_HINT)
  if name in ("ln_coco", "ln_openimages"):
    config_name = "coco" if name == "ln_coco" else "open_images"
    return DatasetSpec(f"{localized_narratives.NAME}/{config_name}", localized_narratives.decoders(),
                       localized_narratives.standardize, {}, localized_narratives.prepare_hint(config_name),
                       auto_prepare=True, needs_manual_dir=True)
  if name == "shapes":
    from xmc_gan_jax.data import shapes_builder  # pylint: disable=import-outside-toplevel,unused-import
    decoders = tfds.decode.PartialDecoding(
        {"image": True, "image/id": True, "captions": True, "objects": True},
        decoders={"image": tfds.decode.SkipDecoding()})
    return DatasetSpec(f"captioned_shapes/{image_size}px", decoders, _standardize_shapes, auto_prepare=True)
  if name == "random":
    raise ValueError("dataset.name='random' is the TF-free random source; it has no tf.data pipeline.")
  raise ValueError(f"Unknown dataset.name {name!r}; expected one of shapes, coco, ln_coco, ln_openimages.")


def process_split(split: str, process_index: int, process_count: int):
  """This process's disjoint, near-equal part of a TFDS split (the parts of all processes cover it)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, {process_count}).")
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def load_builder(spec: DatasetSpec, data_dir: str, manual_dir: str, process_count: int):
  """The prepared TFDS builder; see DatasetSpec.auto_prepare for what is prepared on first use."""
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"TFDS dataset {spec.tfds_name!r} is not available: {e}") from e
  if not builder.is_prepared():
    if not spec.auto_prepare or process_count > 1 or (spec.needs_manual_dir and not manual_dir):
      raise FileNotFoundError(
          f"{spec.tfds_name} is not prepared in {builder.data_dir}. Prepare it once, then point "
          f"config.dataset.data_dir at it: {spec.prepare_hint or 'tfds build'}")
    logging.info("Preparing %s in %s (first use).", spec.tfds_name, builder.data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
    builder.download_and_prepare(download_config=download_config)
  return builder


def describe_source(builder, spec: DatasetSpec, split: str) -> str:
  """Names the data in errors and warnings: dataset, split and data_dir."""
  root = getattr(builder, "data_dir_root", None) or builder.data_dir
  return f"dataset {spec.tfds_name}, split {split!r}, data_dir {os.fspath(root)}"


def read_records(builder, spec: DatasetSpec, split: str, process_index: int,
                 process_count: int) -> tuple[tf.data.Dataset, int]:
  """(standard records of this process's shard in stored order, number of records in it).

  TFRecord datasets are read shard file by shard file, in the order TFDS reads them, so that an unreadable
  record ends only its own file: the rest of that file becomes one placeholder record whose `_corrupt` holds the
  number of records lost (counted as skipped_corrupt_records) and a warning names the file.
  """
  sub_split = process_split(spec.resolve_split(split), process_index, process_count)
  if _reads_tfrecord_shards(builder):
    return _read_shards(builder, spec, sub_split, describe_source(builder, spec, split))
  ds = builder.as_dataset(split=sub_split, decoders=spec.decoders, shuffle_files=False)
  num_records = int(ds.cardinality())
  if num_records < 0:
    num_records = int(builder.info.splits[sub_split].num_examples)
  return ds.map(spec.standardize, num_parallel_calls=_AUTOTUNE), num_records


def _reads_tfrecord_shards(builder) -> bool:
  """Whether the builder reads TFRecord shards with TFDS's own reader (not a mock or a custom _as_dataset)."""
  as_dataset = getattr(type(builder), "_as_dataset", None)
  if getattr(as_dataset, "__qualname__", "") != "FileReaderBuilder._as_dataset":
    return False
  file_format = builder.info.file_format or tfds.core.file_adapters.DEFAULT_FILE_FORMAT
  return tfds.core.file_adapters.FileFormat.from_value(file_format) == tfds.core.file_adapters.FileFormat.TFRECORD


def _read_shards(builder, spec: DatasetSpec, sub_split, source: str) -> tuple[tf.data.Dataset, int]:
  """TFDS's read of `sub_split` (same files, skip/take, interleave and decoding, hence the same order), with
  each shard file read on its own so that damage is skipped, counted and named; see read_records."""
  instructions = list(builder.info.splits[sub_split].file_instructions)
  num_records = sum(int(f.take) for f in instructions)
  paths = [os.fspath(f.filename) for f in instructions]
  readable = []
  for path, instruction in zip(paths, instructions):
    exists = tf.io.gfile.exists(path)
    readable.append(exists and tf.io.gfile.stat(path).length > 0)
    if not exists:  # TFRecordDataset(...).ignore_errors() would retry a missing file forever
      logging.warning("%s: shard file %s is missing; its %d records are skipped (skipped_corrupt_records).",
                      source, path, instruction.take)
  if num_records > 0 and not any(r for r, f in zip(readable, instructions) if f.take > 0):
    raise RuntimeError(f"No readable data for {source}: every shard file of this process's part is missing "
                       f"or empty ({', '.join(paths)}). Prepare the dataset again (TFDS) or fix "
                       "config.dataset.data_dir.")

  if isinstance(spec.decoders, tfds.decode.PartialDecoding):
    features = spec.decoders.extract_features(builder.info.features)
    decoders = spec.decoders.decoders
  else:
    features, decoders = builder.info.features, spec.decoders

  def parse(serialized):
    return features.deserialize_example(serialized, decoders=decoders)

  decoded_spec = tf.data.Dataset.from_tensors(tf.constant(b"")).map(parse).element_spec
  reported, lock = set(), threading.Lock()

  def report(path, skip, take, read, lost):
    key = (bytes(path), int(skip), int(read))
    with lock:
      first = key not in reported
      reported.add(key)
    if first:  # once per damaged file and pipeline (every epoch reads it again)
      logging.warning("%s: shard file %s is corrupt or truncated: %d of the %d records this process reads from it ("
                      "from its record %d on) were readable, the remaining %d are skipped (skipped_corrupt_records).",
                      source, bytes(path).decode("utf-8", "replace"), int(read), int(take), int(skip), int(lost))
    return lost

  def shard_records(instruction):
    path, skip, take = instruction["path"], instruction["skip"], instruction["take"]
    records = tf.data.TFRecordDataset(path).skip(skip).take(tf.where(instruction["readable"], take, 0))
    records = records.ignore_errors().map(lambda record: (record, tf.constant(False)))
    end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True)))

    def count(read, item):
      record, is_end = item
      lost = tf.where(is_end, take - read, tf.constant(0, tf.int64))
      return read + tf.cast(tf.logical_not(is_end), tf.int64), (record, lost, is_end, read)

    def named(record, lost, is_end, read):
      lost = tf.cond(lost > 0, lambda: tf.numpy_function(report, [path, skip, take, read, lost], tf.int64,
                                                         stateful=True),
                     lambda: lost)
      return record, tf.ensure_shape(lost, [])

    out = records.concatenate(end).scan(tf.constant(0, tf.int64), count)
    out = out.filter(lambda record, lost, is_end, read: tf.logical_or(tf.logical_not(is_end), lost > 0))
    return out.map(named)

  read_config = tfds.ReadConfig()
  cycle_length = read_config.interleave_cycle_length
  if not isinstance(cycle_length, int) or cycle_length < 1:  # TFDS's default (MISSING)
    cycle_length = 1 if builder.info.disable_shuffling else 16
  instruction_ds = tf.data.Dataset.from_tensor_slices({
      "path": tf.constant(paths, tf.string), "skip": np.array([f.skip for f in instructions], np.int64),
      "take": np.array([f.take for f in instructions], np.int64), "readable": np.array(readable, bool)})
  ds = instruction_ds.interleave(shard_records, cycle_length=cycle_length,
                                 block_length=read_config.interleave_block_length, num_parallel_calls=_AUTOTUNE,
                                 deterministic=True)
  placeholder = tf.nest.map_structure(
      lambda s: tf.zeros([0 if d is None else d for d in s.shape], s.dtype), decoded_spec)

  def standard(serialized, lost):
    example = tf.cond(lost > 0, lambda: placeholder, lambda: parse(serialized))
    example = tf.nest.map_structure(lambda t, s: tf.ensure_shape(t, s.shape), example, decoded_spec)
    return dict(spec.standardize(example), _corrupt=lost)

  return ds.map(standard, num_parallel_calls=_AUTOTUNE), num_records


# ------------------------------------------------------------------------------------------------ per example
def _example_key(seed: int, process_index: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Stateless RNG key int64 [2] for one record in one epoch."""
  key = tf.constant([seed, process_index], tf.int64)
  key = tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_fold_in(key, tf.cast(index, tf.int64))


def choose_caption(captions: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
  """One non-empty caption (stripped) of string [N], uniform given key int64 [2]; "" if none is non-empty."""
  captions = tf.strings.strip(tf.reshape(captions, [-1]))
  non_empty = tf.boolean_mask(captions, tf.strings.length(captions) > 0)
  count = tf.shape(non_empty)[0]
  pick = tf.random.stateless_uniform([], seed=key, minval=0, maxval=tf.maximum(count, 1), dtype=tf.int32)
  return tf.concat([non_empty, [""]], axis=0)[pick]


def _prepare_example(record: dict[str, tf.Tensor], epoch, index, *, seed: int, process_index: int,
                     flip: bool) -> dict[str, tf.Tensor]:
  """Caption choice and flip decision (before decoding); marks examples with no usable caption."""
  key = _example_key(seed, process_index, epoch, index)
  caption = choose_caption(record["captions"], tf.random.experimental.stateless_fold_in(key, 0))
  out = {k: v for k, v in record.items() if k not in ("captions", "_corrupt")}
  out["caption"] = caption
  out["_status"] = tf.where(tf.strings.length(caption) > 0, _OK, _EMPTY_CAPTION)
  if "_corrupt" in record:  # placeholder for the unreadable rest of a shard file: counts as that many records
    corrupt = record["_corrupt"] > 0
    out["_status"] = tf.where(corrupt, _CORRUPT, out["_status"])
    out["_weight"] = tf.where(corrupt, record["_corrupt"], tf.constant(1, tf.int64))
  else:
    out["_weight"] = tf.constant(1, tf.int64)
  flip_key = tf.random.experimental.stateless_fold_in(key, 1)
  out["_flip"] = tf.random.stateless_uniform([], seed=flip_key) < 0.5 if flip else tf.constant(False)
  return out


def _decoded(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """Decodes the image (any format TF reads, forced to RGB); sets _TOO_SMALL for sides under MIN_IMAGE_SIDE."""
  out = dict(example)
  skip = tf.not_equal(example["_status"], _OK)
  image = tf.cond(skip, lambda: tf.zeros([0, 0, 3], tf.uint8),
                  lambda: tf.io.decode_image(example["image"], channels=3, expand_animations=False))
  image = tf.ensure_shape(image, [None, None, 3])
  small = tf.logical_and(tf.logical_not(skip), tf.reduce_min(tf.shape(image)[:2]) < MIN_IMAGE_SIDE)
  out["image"] = image
  out["_status"] = tf.where(small, _TOO_SMALL, example["_status"])
  return out


def _decode_or_flag(example: dict[str, tf.Tensor]) -> tf.data.Dataset:
  """A one-element dataset: the decoded example, or the example flagged _UNDECODABLE if decoding raised."""
  failed = dict(example, image=tf.zeros([0, 0, 3], tf.uint8), _status=tf.constant(_UNDECODABLE))
  good = tf.data.Dataset.from_tensors(example).map(_decoded).ignore_errors()
  return good.concatenate(tf.data.Dataset.from_tensors(failed)).take(1)


def decode_and_check(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Decodes images in parallel (order kept); undecodable ones are flagged instead of failing the pipeline."""
  return ds.interleave(_decode_or_flag, cycle_length=_AUTOTUNE, block_length=1, num_parallel_calls=_AUTOTUNE,
                       deterministic=True)


def count_and_filter(ds: tf.data.Dataset, max_consecutive_skips: int) -> tf.data.Dataset:
  """Drops flagged examples; each kept one carries `_skips` int64 [4], the skips so far (SKIP_KEYS order).

  Fails with a clear error once more than `max_consecutive_skips` records in a row were skipped (a whole pass
  over the data without one usable example), instead of looping forever. An example's `_weight` (default 1) is
  the number of records it stands for (a corrupt-shard placeholder stands for the records lost).
  """
  message = (f"No usable example in {max_consecutive_skips + 1} consecutive records: every record is unreadable "
             f"(corrupt shard), its image undecodable or smaller than {MIN_IMAGE_SIDE} px, or its captions all "
             "empty. Check the dataset.")

  def step(state, example):
    counts, run = state
    status = example["_status"]
    weight = example.get("_weight", tf.constant(1, tf.int64))
    counts = counts + tf.one_hot(status - 1, len(SKIP_KEYS), dtype=tf.int64) * weight
    run = tf.where(status == _OK, tf.constant(0, tf.int64), run + weight)
    check = tf.debugging.Assert(run <= max_consecutive_skips, [message])
    with tf.control_dependencies([check]):
      counts = tf.identity(counts)
    return (counts, run), dict(example, _skips=counts)

  ds = ds.scan((tf.zeros([len(SKIP_KEYS)], tf.int64), tf.constant(0, tf.int64)), step)
  return ds.filter(lambda example: tf.logical_or(tf.equal(example["_status"], _OK),
                                                 tf.equal(example["_status"], _END)))


def resize_image(image: tf.Tensor, size: int, center_crop: bool) -> tf.Tensor:
  """uint8 [h, w, 3] → float32 [size, size, 3] in [0, 255]: bilinear, no antialiasing, aspect not kept
  (the original), or the central square first when center_crop."""
  if center_crop:
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
  return tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear", antialias=False)


def _finish_example(example: dict[str, tf.Tensor], *, size: int, center_crop: bool) -> dict[str, tf.Tensor]:
  """Resize, optional flip, uint8; drops the internal keys except _skips and _segment."""
  image = tf.cond(tf.equal(example["_status"], _END), lambda: tf.zeros([size, size, 3]),
                  lambda: resize_image(example["image"], size, center_crop))
  image = tf.cond(example["_flip"], lambda: tf.reverse(image, axis=[1]), lambda: image)
  out = {k: v for k, v in example.items() if k not in ("_status", "_flip", "_weight")}
  out["image"] = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
  return out


def _tokenize_batch(batch: dict[str, tf.Tensor], tokenizer: tokenizer_lib.BertTextTokenizer):
  tokens = tokenizer.tokenize_tf(batch["caption"])
  return dict(batch, token_ids=tokens.ids, token_mask=tokens.mask, _truncated=tokens.truncated)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


# ---------------------------------------------------------------------------------------------- pipelines
@dataclasses.dataclass(frozen=True)
class PipelineSettings:
  """Everything the pipelines need besides the records. batch_size is process-local."""
  batch_size: int
  image_size: int
  seed: int
  process_index: int = 0
  center_crop: bool = False
  shuffle_buffer: int = 1000
  random_flip: bool = True  # training only; captioned shapes turn it off (its captions name left and right)


def train_dataset(records: tf.data.Dataset, num_records: int, settings: PipelineSettings,
                  tokenizer: tokenizer_lib.BertTextTokenizer, start_step: int = 0) -> tf.data.Dataset:
  """Infinite batches from step start_step on (see the module docstring for the epoch/resume scheme)."""
  batch = settings.batch_size
  steps_per_epoch = num_records // batch
  if steps_per_epoch < 1:
    raise ValueError(f"The process shard has {num_records} examples, fewer than the process batch {batch}: "
                     "lower config.batch_size or use a larger split.")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  start_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
  if tf.compat.v1.random.get_seed(0)[0] != _TF_DEFAULT_GRAPH_SEED:
    logging.warning("tf.random.set_seed() was called: the shuffle order now depends on that seed too, so "
                    "resumed runs match only if they set the same one.")
  indexed = records.enumerate()
  key = tf.constant([settings.seed, settings.process_index], tf.int64)

  def epoch_batches(epoch):
    shuffle_seed = tf.random.stateless_uniform(
        [], seed=tf.random.experimental.stateless_fold_in(key, epoch), minval=None, maxval=None, dtype=tf.int64)
    ds = indexed.shuffle(settings.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False).repeat()
    ds = ds.map(lambda index, record: dict(_prepare_example(
        record, epoch, index, seed=settings.seed, process_index=settings.process_index,
        flip=settings.random_flip),
                                            _segment=epoch), num_parallel_calls=_AUTOTUNE)
    ds = count_and_filter(decode_and_check(ds), max_consecutive_skips=num_records)
    ds = ds.take(steps_per_epoch * batch)
    ds = ds.skip(tf.where(epoch == start_epoch, tf.constant(step_in_epoch * batch, tf.int64), 0))
    ds = ds.map(lambda ex: _finish_example(ex, size=settings.image_size, center_crop=settings.center_crop),
                num_parallel_calls=_AUTOTUNE)
    return ds.batch(batch, drop_remainder=True)

  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
  ds = ds.map(lambda b: _tokenize_batch(b, tokenizer), num_parallel_calls=_AUTOTUNE)
  return ds.prefetch(_AUTOTUNE).with_options(_options())


def eval_num_batches(shard_sizes: list[int], num_examples: int | None, batch_size: int) -> int:
  """Batches every process yields: enough for the largest per-process share (shards or num_examples)."""
  count = len(shard_sizes)
  share = max(shard_sizes) if num_examples is None else -(-num_examples // count)
  return max(1, math.ceil(share / batch_size))


def eval_dataset(records: tf.data.Dataset, num_records: int, settings: PipelineSettings,
                 tokenizer: tokenizer_lib.BertTextTokenizer, num_take: int | None,
                 num_batches: int) -> tf.data.Dataset:
  """Finite, unshuffled, unflipped batches: one pass (num_take None) or exactly num_take usable examples (the
  shard is cycled with a fresh caption choice per pass), then padding rows (valid = 0) up to num_batches."""
  if num_records < 1:
    raise ValueError("The evaluation split of this process is empty.")
  ds = records if num_take is None else records.repeat()
  ds = ds.enumerate().map(lambda i, record: dict(_prepare_example(
      record, i // num_records, i % num_records, seed=settings.seed, process_index=settings.process_index,
      flip=False), _segment=tf.constant(0, tf.int64)), num_parallel_calls=_AUTOTUNE)
  if num_take is None:  # an end row, so that skips after the last usable example are counted too
    end = tf.nest.map_structure(lambda s: tf.zeros([0 if d is None else d for d in s.shape], s.dtype),
                                ds.element_spec)
    end.update(_status=tf.constant(_END, end["_status"].dtype), _weight=tf.constant(0, tf.int64))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(end))
  # One pass (num_take None) is num_records records: all of them skipped means the split has no usable example.
  max_skips = num_records if num_take is not None else num_records - 1
  ds = count_and_filter(decode_and_check(ds), max_consecutive_skips=max_skips)
  if num_take is not None:
    ds = ds.take(num_take)
  ds = ds.map(lambda ex: dict(_finish_example(ex, size=settings.image_size, center_crop=settings.center_crop),
                              valid=tf.cast(tf.equal(ex["_status"], _OK), tf.int32)),
              num_parallel_calls=_AUTOTUNE)
  # Padding rows: black image, caption "" (tokenised as [CLS] [SEP]), valid 0.
  padding = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat()).take(num_batches * settings.batch_size)
  ds = ds.batch(settings.batch_size, drop_remainder=True)
  ds = ds.map(lambda b: _tokenize_batch(b, tokenizer), num_parallel_calls=_AUTOTUNE)
  return ds.prefetch(_AUTOTUNE).with_options(_options())


class DataIterator:
  """Iterator of host batches (dicts of numpy arrays) that also tracks skipped and truncated examples."""

  def __init__(self, dataset: tf.data.Dataset, name: str, num_batches: int | None = None, source: str = ""):
    """source: the data in words (describe_source), named in errors and logs."""
    self.dataset = dataset
    self.name = name
    self.num_batches = num_batches
    self.source = source
    self._iterator = dataset.as_numpy_iterator()
    self._skips_by_segment: dict[int, np.ndarray] = {}
    self._truncated = 0
    self._logged: dict[str, int] = {}

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __len__(self) -> int:
    if self.num_batches is None:
      raise TypeError(f"The {self.name} iterator is infinite.")
    return self.num_batches

  def __next__(self) -> dict[str, np.ndarray]:
    try:
      batch = next(self._iterator)
    except tf.errors.OpError as e:
      where = f" ({self.source})" if self.source else ""
      raise RuntimeError(f"{self.name} input pipeline{where} failed: {e.message}") from e
    # _skips counts skips cumulatively within a segment (a training epoch; the whole eval stream).
    segments, skips, truncated = batch.pop("_segment"), batch.pop("_skips"), batch.pop("_truncated")
    real = batch["valid"].astype(bool) if "valid" in batch else np.ones(len(segments), bool)
    # Counts only grow within a segment; padding rows carry zeros, the eval end row the final counts.
    for segment in np.unique(segments):
      latest = skips[segments == segment].max(axis=0)
      self._skips_by_segment[int(segment)] = np.maximum(self._skips_by_segment.get(int(segment), latest), latest)
    self._truncated += int(truncated[real].sum())
    self._log_changes()
    return batch

  def stats(self) -> dict[str, int]:
    """Examples skipped so far by reason, and captions truncated so far (keys STAT_KEYS)."""
    skips = (np.sum(list(self._skips_by_segment.values()), axis=0) if self._skips_by_segment
             else np.zeros(len(SKIP_KEYS)))
    counts = {key: int(value) for key, value in zip(SKIP_KEYS, skips)}
    counts["truncated_caption"] = self._truncated
    return counts

  def _log_changes(self) -> None:
    counts = self.stats()
    if counts != self._logged and any(counts.values()):
      logging.log_every_n_seconds(logging.INFO, "%s data (%s): %s", 60, self.name, self.source, counts)
      self._logged = counts


def _process_info(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return process_index, process_count


def _host_batch(global_batch: int, process_count: int, what: str) -> int:
  if global_batch % process_count:
    raise ValueError(f"{what} {global_batch} is not divisible by the number of processes {process_count}.")
  return global_batch // process_count


def _settings(config, host_batch: int, process_index: int) -> PipelineSettings:
  return PipelineSettings(batch_size=host_batch, image_size=int(config.model.image_size), seed=int(config.seed),
                          process_index=process_index, center_crop=bool(config.dataset.center_crop),
                          shuffle_buffer=int(config.dataset.shuffle_buffer),
                          random_flip=bool(config.dataset.get("random_flip", True)))


def create_train_iterator(config, vocab_path: str, start_step: int = 0, *, process_index: int | None = None,
                          process_count: int | None = None) -> DataIterator:
  """Infinite shuffled, flipped training batches of this process, from step start_step on."""
  process_index, process_count = _process_info(process_index, process_count)
  host_batch = _host_batch(int(config.batch_size), process_count, "config.batch_size")
  spec = dataset_spec(config.dataset.name, int(config.model.image_size))
  builder = load_builder(spec, config.dataset.data_dir, config.dataset.manual_dir, process_count)
  records, num_records = read_records(builder, spec, config.dataset.train_split, process_index, process_count)
  tokenizer = tokenizer_lib.BertTextTokenizer(vocab_path, int(config.text_encoder.max_length))
  ds = train_dataset(records, num_records, _settings(config, host_batch, process_index), tokenizer, start_step)
  logging.info("Train data %s[%s]: %d examples in process %d/%d, batch %d, resuming at step %d.",
               spec.tfds_name, config.dataset.train_split, num_records, process_index, process_count, host_batch,
               start_step)
  return DataIterator(ds, "train", source=describe_source(builder, spec, config.dataset.train_split))


def create_eval_iterator(config, vocab_path: str, num_examples: int | None, batch_size: int, *,
                         seed_offset: int = 0, process_index: int | None = None,
                         process_count: int | None = None) -> DataIterator:
  """Finite eval batches of this process: one pass over the eval split, or num_examples (global) examples.

  batch_size is global; every process yields the same number of batches (`len(iterator)`), padded rows have
  `valid` 0. num_examples larger than the split cycles through it again with new caption choices. Caption
  choices depend on config.seed + seed_offset (use a new offset per repeated evaluation).
  """
  process_index, process_count = _process_info(process_index, process_count)
  host_batch = _host_batch(int(batch_size), process_count, "eval batch_size")
  if num_examples is not None and num_examples < 1:
    raise ValueError(f"num_examples must be positive or None, got {num_examples}.")
  spec = dataset_spec(config.dataset.name, int(config.model.image_size))
  builder = load_builder(spec, config.dataset.data_dir, config.dataset.manual_dir, process_count)
  split = spec.resolve_split(config.dataset.eval_split)
  shard_sizes = [int(builder.info.splits[process_split(split, p, process_count)].num_examples)
                 if _reads_tfrecord_shards(builder) else
                 int(builder.as_dataset(split=process_split(split, p, process_count), decoders=spec.decoders)
                     .cardinality()) for p in range(process_count)]
  records, num_records = read_records(builder, spec, config.dataset.eval_split, process_index, process_count)
  num_take = None
  if num_examples is not None:
    num_take = num_examples // process_count + int(process_index < num_examples % process_count)
  num_batches = eval_num_batches(shard_sizes, num_examples, host_batch)
  tokenizer = tokenizer_lib.BertTextTokenizer(vocab_path, int(config.text_encoder.max_length))
  settings = dataclasses.replace(_settings(config, host_batch, process_index),
                                 seed=int(config.seed) + int(seed_offset))
  ds = eval_dataset(records, num_records, settings, tokenizer, num_take, num_batches)
  return DataIterator(ds, "eval", num_batches=num_batches,
                      source=describe_source(builder, spec, config.dataset.eval_split))
