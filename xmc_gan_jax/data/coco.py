"""MS-COCO 2014 captions through TFDS `coco_captions/2014`, split as the original XMC-GAN.

Train = TFDS `train` (82,783 images = COCO-2014 train). Eval = `restval+test+val` (30,504 + 5,000 + 5,000 =
40,504 images = all of COCO-2014 val; these are the Karpathy splits TFDS ships). Every image has 5 (a few have
6-7) human captions; the pipeline picks one at random per example and epoch.

Preparing: TFDS downloads and builds it itself (about 40 GB of downloads: train2014, val2014, test2014, test2015
and the annotations, because coco_captions inherits coco/2014's splits), e.g. on a CPU VM:
    tfds build coco_captions/2014 --data_dir=gs://BUCKET/tensorflow_datasets
then train with config.dataset.data_dir set to that directory (local or gs://).
"""
import contextlib
from typing import Iterator
from unittest import mock

import tensorflow as tf
import tensorflow_datasets as tfds

TFDS_NAME = "coco_captions/2014"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "restval+test+val"
# Images per TFDS split (coco_captions 1.1.0).
SPLIT_SIZES = {"train": 82_783, "restval": 30_504, "test": 5_000, "val": 5_000}
# The original called its eval split "validation"; config.dataset.eval_split may use either name.
SPLIT_ALIASES = {"validation": EVAL_SPLIT}
PREPARE_HINT = ("tfds build coco_captions/2014 --data_dir=DATA_DIR (downloads ~40 GB from "
                "images.cocodataset.org), then set config.dataset.data_dir=DATA_DIR")


def decoders() -> tfds.decode.PartialDecoding:
  """Reads only image (left encoded: the pipeline decodes and counts failures), image/id and caption texts."""
  return tfds.decode.PartialDecoding(
      {"image": True, "image/id": True, "captions": {"text": True}},
      decoders={"image": tfds.decode.SkipDecoding()})


def standardize(example: dict) -> dict[str, tf.Tensor]:
  """coco_captions example → {"image": encoded string [], "captions": string [N], "image_id": string []}."""
  return {"image": example["image"], "captions": example["captions"]["text"],
          "image_id": tf.strings.as_string(example["image/id"])}


@contextlib.contextmanager
def mock_data(num_examples: int = 8, seed: int = 0) -> Iterator[None]:
  """Like `tfds.testing.mock_data` for coco_captions (which then counts as prepared), with images served encoded
  (as PNG) as the pipeline reads them: random image sizes (5-49 px a side), random caption counts (5-49, random
  text), no download.

  tfds's own mock cannot serve this read: with `decoders` it re-encodes examples and fails on Sequence(Text).
  Use it to smoke-test COCO configs without the dataset.
  """
  from tensorflow_datasets.testing import mocking  # pylint: disable=import-outside-toplevel

  def as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    del split, read_config, kwargs
    features = builder.info.features
    if isinstance(decoders, tfds.decode.PartialDecoding):
      features = decoders.extract_features(features)
    generator = mocking.RandomFakeGenerator(features, num_examples, seed=seed)
    signature = tf.nest.map_structure(lambda info: tf.TensorSpec(info.shape, info.dtype),
                                      features.get_tensor_info())
    ds = tf.data.Dataset.from_generator(lambda: iter(generator), output_signature=signature)
    ds = ds.map(lambda example: dict(example, image=tf.io.encode_png(example["image"])))
    return ds.apply(tf.data.experimental.assert_cardinality(num_examples))

  with tfds.testing.mock_data(num_examples=num_examples, as_dataset_fn=as_dataset), \
       mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    yield
