"""COCO-2014 through TFDS coco_captions: splits, feature adapter, and the pipeline on mocked data."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from configs import common
from xmc_gan_jax.data import coco
from xmc_gan_jax.data import input_pipeline as ip
from xmc_gan_jax.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.slow  # TFDS mock COCO through tf.data


def test_splits_are_the_originals():
  assert coco.SPLIT_SIZES["train"] == 82_783
  assert sum(coco.SPLIT_SIZES[s] for s in coco.EVAL_SPLIT.split("+")) == 40_504
  spec = ip.dataset_spec("coco", 256)
  assert spec.tfds_name == "coco_captions/2014"
  assert spec.resolve_split("validation") == "restval+test+val" and spec.resolve_split("train") == "train"
  # coco_captions knows these splits (from its code; no data needed).
  builder = tfds.builder("coco_captions/2014")
  assert "captions" in builder.info.features and "image/id" in builder.info.features


def test_standardize_keeps_encoded_image_and_all_captions():
  example = {"image": tf.constant(b"\x89PNG..."), "image/id": tf.constant(391895, tf.int64),
             "captions": {"text": tf.constant(["a man", "a bike", "a road"]), "id": tf.constant([1, 2])}}
  record = coco.standardize(example)
  assert set(record) == {"image", "captions", "image_id"}
  assert record["image"].numpy() == b"\x89PNG..." and record["image_id"].numpy() == b"391895"
  assert record["captions"].numpy().tolist() == [b"a man", b"a bike", b"a road"]


def _source_examples(num_examples):
  """The examples coco.mock_data serves, straight from tfds's random generator (decoded)."""
  features = coco.decoders().extract_features(tfds.builder("coco_captions/2014").info.features)
  return list(mocking.RandomFakeGenerator(features, num_examples, seed=0))


def _resize(image, size):
  """Numpy bilinear resize (half-pixel centres, no antialiasing)."""
  def axis(n):
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    low = np.floor(src).astype(int)
    return low, np.minimum(low + 1, n - 1), src - low
  image = image.astype(np.float64)
  r0, r1, rw = axis(image.shape[0])
  rows = image[r0] * (1 - rw)[:, None, None] + image[r1] * rw[:, None, None]
  c0, c1, cw = axis(image.shape[1])
  return rows[:, c0] * (1 - cw)[None, :, None] + rows[:, c1] * cw[None, :, None]


def test_eval_on_mock_coco_matches_source_examples():
  num = 12
  sources = _source_examples(num)
  usable = [s for s in sources if min(s["image"].shape[:2]) >= ip.MIN_IMAGE_SIDE]
  assert 0 < len(usable) < num  # the mock draws some images under 8 px: they must be skipped
  assert len({len(s["captions"]["text"]) for s in sources}) > 1  # random caption counts
  config = common.get_base_config()
  config.dataset.name = "coco"
  config.dataset.eval_split = "validation"  # the original's name for restval+test+val
  config.model.image_size = 16
  config.text_encoder.max_length = 6
  with coco.mock_data(num_examples=num):
    iterator = ip.create_eval_iterator(config, tokenizer_lib.default_vocab_path(), None, 4, process_index=0,
                                       process_count=1)
    batches = list(iterator)
  assert len(batches) == len(iterator) == -(-num // 4)
  valid = np.concatenate([b["valid"] for b in batches]).astype(bool)
  images = np.concatenate([b["image"] for b in batches])[valid]
  captions = np.concatenate([b["caption"] for b in batches])[valid]
  assert len(images) == len(usable)
  for image, caption, source in zip(images, captions, usable):
    assert np.max(np.abs(image - _resize(source["image"], 16))) <= 1.0
    assert caption.decode() in [t.strip() for t in source["captions"]["text"]]
  stats = iterator.stats()
  assert stats["skipped_too_small"] == num - len(usable)
  # Mock captions are 10-19 random letters and spaces: most have more than the 4 word pieces T=6 leaves.
  pieces = tokenizer_lib.BertTextTokenizer(tokenizer_lib.default_vocab_path(), 6).wordpieces(captions)
  assert stats["truncated_caption"] == int((pieces.row_lengths() > 4).numpy().sum()) > 0


def test_eval_on_mock_coco_oversamples_to_num_examples():
  config = common.get_base_config()
  config.dataset.name = "coco"
  config.dataset.eval_split = coco.EVAL_SPLIT
  config.model.image_size = 8
  with coco.mock_data(num_examples=6):
    iterator = ip.create_eval_iterator(config, tokenizer_lib.default_vocab_path(), 20, 8, process_index=0,
                                       process_count=1)
    valid = np.concatenate([b["valid"] for b in iterator])
  assert len(valid) == 24 and valid.sum() == 20


def test_unprepared_coco_asks_for_tfds_build_instead_of_downloading(tmp_path):
  config = common.get_base_config()
  config.dataset.name = "coco"
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="tfds build coco_captions/2014"):
    ip.create_train_iterator(config, tokenizer_lib.default_vocab_path(), process_index=0, process_count=1)
