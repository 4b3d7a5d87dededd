"""tf.data pipelines: contract, resize/flip against numpy, skips, determinism, resume, sharding, eval padding."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from xmc_gan_jax.data import coco
from xmc_gan_jax.data import input_pipeline as ip
from xmc_gan_jax.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.slow  # tf.data pipelines over generated TFDS datasets


@pytest.fixture(scope="module")
def vocab_path():
  return tokenizer_lib.default_vocab_path()


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
  return tokenizer_lib.BertTextTokenizer(vocab_path, max_length=8)


def _png(array):
  return tf.io.encode_png(np.asarray(array, np.uint8)).numpy()


def _noise(rng, height, width):
  return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _records(items):
  """In-memory standard records from (image bytes, captions) pairs; ids are "0", "1", ..."""
  width = max(len(captions) for _, captions in items)
  captions = [list(c) + [""] * (width - len(c)) for _, c in items]
  return tf.data.Dataset.from_tensor_slices({
      "image": [image for image, _ in items], "captions": captions,
      "image_id": [str(i) for i in range(len(items))]}), len(items)


def _settings(**overrides):
  values = dict(batch_size=4, image_size=8, seed=0, shuffle_buffer=16)
  values.update(overrides)
  return ip.PipelineSettings(**values)


def _train(items, tokenizer, start_step=0, **overrides):
  records, count = _records(items)
  return ip.DataIterator(ip.train_dataset(records, count, _settings(**overrides), tokenizer, start_step), "train")


def _eval(items, tokenizer, num_take=None, **overrides):
  records, count = _records(items)
  settings = _settings(**overrides)
  num_batches = ip.eval_num_batches([count], num_take, settings.batch_size)
  return ip.DataIterator(ip.eval_dataset(records, count, settings, tokenizer, num_take, num_batches), "eval",
                         num_batches)


def _reference_resize(image, size):
  """Bilinear resize with half-pixel centres and no antialiasing, written out in numpy (float64)."""
  def weights(n_in):
    src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    low = np.floor(src).astype(int)
    return low, np.minimum(low + 1, n_in - 1), src - low
  image = image.astype(np.float64)
  r0, r1, rw = weights(image.shape[0])
  rows = image[r0] * (1 - rw)[:, None, None] + image[r1] * rw[:, None, None]
  c0, c1, cw = weights(image.shape[1])
  return rows[:, c0] * (1 - cw)[None, :, None] + rows[:, c1] * cw[None, :, None]


def _close(a, b):
  return np.max(np.abs(a.astype(np.float64) - b)) <= 1.0


def test_bad_input_is_skipped_and_counted(tokenizer):
  rng = np.random.default_rng(0)
  good = _png(_noise(rng, 12, 9))
  jpeg = tf.io.encode_jpeg(_noise(rng, 32, 32)).numpy()
  items = [
      (good, ["a red car"]),                                       # 0 kept
      (b"definitely not an image", ["a dog"]),                     # 1 undecodable
      (jpeg[: len(jpeg) // 2], ["a cut jpeg"]),                    # 2 undecodable (truncated)
      (good, ["", "   "]),                                         # 3 only empty captions
      (_png(_noise(rng, 4, 4)), ["a tiny image"]),                 # 4 too small
      (_png(_noise(rng, 7, 40)), ["a thin image"]),                # 5 too small (7 px high)
      (_png(_noise(rng, 8, 8)), ["", "an image of exactly eight by eight pixels"]),  # 6 kept, truncated at T=8
      (jpeg, ["a whole jpeg", ""]),                                # 7 kept
  ]
  iterator = _eval(items, tokenizer)
  batches = list(iterator)
  ids = np.concatenate([b["image_id"][b["valid"] == 1] for b in batches]).tolist()
  assert sorted(ids) == [b"0", b"6", b"7"]
  assert iterator.stats() == {"skipped_undecodable": 2, "skipped_empty_caption": 1, "skipped_too_small": 2,
                              "skipped_corrupt_records": 0, "truncated_caption": 1}
  captions = np.concatenate([b["caption"][b["valid"] == 1] for b in batches]).tolist()
  assert b"an image of exactly eight by eight pixels" in captions


def test_train_counts_skips_and_wraps_short_epochs(tokenizer):
  rng = np.random.default_rng(1)
  items = [(_png(_noise(rng, 10, 10)), [f"picture {i}"]) for i in range(7)]
  items += [(b"junk", ["x"]), (_png(_noise(rng, 3, 3)), ["y"]), (_png(_noise(rng, 9, 9)), [""])]
  iterator = _train(items, tokenizer)          # 10 records, batch 4: 2 steps per epoch, 7 usable examples
  epoch = np.concatenate([next(iterator)["image_id"] for _ in range(2)]).tolist()
  assert len(epoch) == 8 and set(epoch) == {str(i).encode() for i in range(7)}  # one example seen twice
  stats = iterator.stats()
  for key in ("skipped_undecodable", "skipped_too_small", "skipped_empty_caption"):
    assert stats[key] in (1, 2), stats  # each bad record met once, or twice if the wrap passed it again


def test_all_bad_input_fails_with_a_clear_error(tokenizer):
  iterator = _train([(b"junk", ["a caption"])] * 5, tokenizer)
  with pytest.raises(RuntimeError, match="No usable example"):
    next(iterator)


def test_resize_matches_numpy_and_flip_only_in_train(tokenizer):
  rng = np.random.default_rng(2)
  sources = [_noise(rng, int(rng.integers(9, 40)), int(rng.integers(9, 40))) for _ in range(8)]
  items = [(_png(s), [f"image {i}"]) for i, s in enumerate(sources)]
  refs = [_reference_resize(s, 8) for s in sources]
  for batch in _eval(items, tokenizer):
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, 8, 8, 3)
    for image, image_id in zip(batch["image"], batch["image_id"]):
      assert _close(image, refs[int(image_id)])
  flipped = unflipped = 0
  iterator = _train(items, tokenizer)
  for _ in range(8):
    batch = next(iterator)
    for image, image_id in zip(batch["image"], batch["image_id"]):
      ref = refs[int(image_id)]
      is_plain, is_flipped = _close(image, ref), _close(image, ref[:, ::-1])
      assert is_plain or is_flipped
      unflipped += is_plain and not is_flipped
      flipped += is_flipped and not is_plain
  assert flipped > 4 and unflipped > 4
  no_flip = _train(items, tokenizer, random_flip=False)
  for _ in range(4):
    batch = next(no_flip)
    assert all(_close(im, refs[int(i)]) for im, i in zip(batch["image"], batch["image_id"]))


def test_center_crop_takes_the_middle_square(tokenizer):
  rng = np.random.default_rng(3)
  source = _noise(rng, 12, 30)
  batch = next(iter(_eval([(_png(source), ["wide"])], tokenizer, center_crop=True, batch_size=1)))
  assert _close(batch["image"][0], _reference_resize(source[:, 9:21], 8))


def test_captions_and_tokens(tokenizer):
  rng = np.random.default_rng(4)
  captions = ["  a cat on a mat ", "a dog in a fog", "", "a bird on a wire", "a fish in a dish"]
  items = [(_png(_noise(rng, 10, 10)), captions)] * 4
  seen = set()
  iterator = _train(items, tokenizer)
  for _ in range(10):
    batch = next(iterator)
    for caption, ids, mask in zip(batch["caption"], batch["token_ids"], batch["token_mask"]):
      assert caption.decode() in {c.strip() for c in captions if c.strip()}
      want_ids, want_mask = tokenizer.tokenize([caption.decode()])
      np.testing.assert_array_equal(ids, want_ids[0])
      np.testing.assert_array_equal(mask, want_mask[0])
      seen.add(caption)
  assert len(seen) == 4  # every non-empty caption gets chosen over the epochs
  assert batch["token_ids"].dtype == np.int32 and batch["token_mask"].dtype == np.int32


def test_eval_cycles_for_more_examples_and_pads(tokenizer):
  rng = np.random.default_rng(5)
  items = [(_png(_noise(rng, 10, 10)), [f"first {i}", f"second {i}", f"third {i}"]) for i in range(5)]
  iterator = _eval(items, tokenizer, num_take=11)
  batches = list(iterator)
  assert len(batches) == len(iterator) == 3
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.tolist() == [1] * 11 + [0]
  ids = np.concatenate([b["image_id"] for b in batches])[:11].tolist()
  assert ids == [str(i % 5).encode() for i in range(11)]  # stored order, cycled
  last = batches[-1]
  # Padding rows: black image, empty caption, tokenised as [CLS] [SEP] (no all-zero mask to divide by).
  assert last["caption"][-1] == b"" and not last["image"][-1].any()
  assert last["token_mask"][-1].tolist() == [1, 1] + [0] * 6
  again = np.concatenate([b["caption"] for b in _eval(items, tokenizer, num_take=11)])
  other = np.concatenate([b["caption"] for b in _eval(items, tokenizer, num_take=11, seed=1)])
  np.testing.assert_array_equal(again, np.concatenate([b["caption"] for b in batches]))
  assert (again != other).any()


def test_eval_num_batches_is_shared_by_processes():
  assert ip.eval_num_batches([3, 2], None, 2) == 2
  assert ip.eval_num_batches([3, 2], 9, 2) == 3  # 5 and 4 examples: 3 batches of 2 each
  assert ip.eval_num_batches([3, 3], 1, 4) == 1


def test_shapes_objects_are_padded(tokenizer):
  example = {"image": tf.constant(_png(np.zeros((12, 12, 3)))), "image/id": tf.constant(7, tf.int64),
             "captions": tf.constant(["a red circle", "a circle"]),
             "objects": {f: tf.constant([1, 2], tf.int64) for f in ip.SHAPES_OBJECT_FIELDS}}
  record = ip._standardize_shapes(example)  # pylint: disable=protected-access
  assert record["num_objects"].numpy() == 2 and record["image_id"].numpy() == b"7"
  assert record["objects/color"].numpy().tolist() == [1, 2, -1]
  records = tf.data.Dataset.from_tensors(record).repeat(4)
  batch = next(ip.DataIterator(ip.train_dataset(records, 4, _settings(), tokenizer), "train"))
  assert batch["objects/row"].shape == (4, 3) and batch["objects/row"].dtype == np.int32
  assert batch["num_objects"].tolist() == [2] * 4
  too_many = dict(example, objects={f: tf.constant([1, 2, 3, 4], tf.int64) for f in ip.SHAPES_OBJECT_FIELDS})
  with pytest.raises(tf.errors.InvalidArgumentError, match="more than 3 objects"):
    ip._standardize_shapes(too_many)  # pylint: disable=protected-access


def test_process_split_shards_are_disjoint_and_cover(tmp_path):
  def split_ds(n, offset):
    return tf.data.Dataset.from_tensor_slices({"id": np.arange(offset, offset + n, dtype=np.int64)})
  builder = tfds.dataset_builders.TfDataBuilder(
      name="tiny_ids", version="1.0.0", data_dir=str(tmp_path),
      split_datasets={"train": split_ds(11, 0), "test": split_ds(4, 100)},
      features=tfds.features.FeaturesDict({"id": tfds.features.Scalar(dtype=np.int64)}))
  builder.download_and_prepare()
  for split, everything in (("train", set(range(11))), ("train+test", set(range(11)) | set(range(100, 104)))):
    for count in (2, 3):
      shards = [[int(ex["id"]) for ex in builder.as_dataset(split=ip.process_split(split, p, count))]
                for p in range(count)]
      assert set().union(*shards) == everything and sum(len(s) for s in shards) == len(everything)
      assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 2
  with pytest.raises(ValueError, match="process_index"):
    ip.process_split("train", 2, 2)


def test_bad_configuration_errors(vocab_path, tokenizer):
  config = common.get_base_config()
  config.dataset.name = "coco"
  config.batch_size = 5
  with pytest.raises(ValueError, match="divisible"):
    ip.create_train_iterator(config, vocab_path, process_index=0, process_count=2)
  config.dataset.name = "imagenet"
  with pytest.raises(ValueError, match="Unknown dataset.name"):
    ip.create_train_iterator(config, vocab_path, process_index=0, process_count=1)
  config.dataset.name = "random"
  with pytest.raises(ValueError, match="TF-free"):
    ip.create_train_iterator(config, vocab_path, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="fewer than the process batch"):
    _train([(_png(np.zeros((9, 9, 3))), ["a"])] * 3, tokenizer)
  with pytest.raises(ValueError, match="start_step"):
    _train([(_png(np.zeros((9, 9, 3))), ["a"])] * 4, tokenizer, start_step=-1)


# ----------------------------------------------------------------------------- mock COCO (tfds.testing.mock_data)
def _coco_config(seed=0):
  config = common.get_base_config()
  config.dataset.name = "coco"
  config.dataset.train_split = coco.TRAIN_SPLIT
  config.dataset.eval_split = coco.EVAL_SPLIT
  config.dataset.shuffle_buffer = 8
  config.batch_size = 4
  config.seed = seed
  config.model.image_size = 16
  config.text_encoder.max_length = 10
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_mock_coco_contract_determinism_and_resume(vocab_path):
  with coco.mock_data(num_examples=10):
    def run(start_step=0, seed=0, n=6):
      it = ip.create_train_iterator(_coco_config(seed), vocab_path, start_step, process_index=0, process_count=1)
      return _take(it, n), it
    batches, iterator = run()
    for batch in batches:
      assert set(batch) == {"image", "token_ids", "token_mask", "caption", "image_id"}
      assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8
      assert batch["token_ids"].shape == (4, 10) and batch["token_ids"].dtype == np.int32
      assert ((batch["token_mask"] == 0) | (batch["token_mask"] == 1)).all()
      assert (batch["token_ids"][batch["token_mask"] == 0] == 0).all() and (batch["token_ids"][:, 0] == 101).all()
      assert batch["image"].max() > batch["image"].min()
    # mock images are 5-49 px a side: the ones under 8 px are skipped and counted.
    assert iterator.stats()["skipped_too_small"] > 0
    _assert_same(batches, run()[0])                                     # deterministic per seed
    assert any((a["image"] != b["image"]).any() for a, b in zip(batches, run(seed=1)[0]))
    for start in (1, 3):                              # 2 steps per epoch: inside epoch 0, inside epoch 1
      _assert_same(batches[start:], run(start_step=start, n=6 - start)[0])


def test_captioned_shapes_builder_through_the_pipeline(tmp_path, tokenizer):
  from xmc_gan_jax.data import shapes_builder  # pylint: disable=import-outside-toplevel
  shapes_config = shapes_builder.make_config(32, num_train=8, num_validation=4)
  builder = shapes_builder.CaptionedShapes(config=shapes_config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  spec = ip.dataset_spec("shapes", 32)
  assert spec.tfds_name == "captioned_shapes/32px"
  records, count = ip.read_records(builder, spec, "train", 0, 1)
  settings = _settings(image_size=32, random_flip=False)
  batch = next(ip.DataIterator(ip.train_dataset(records, count, settings, tokenizer), "train"))
  for row, image_id in enumerate(batch["image_id"]):
    want = shapes_builder.generate_example(shapes_config, "train", int(image_id))
    num = len(want["objects"]["color"])
    assert batch["num_objects"][row] == num
    for field in ip.SHAPES_OBJECT_FIELDS:
      assert batch[f"objects/{field}"][row].tolist() == want["objects"][field].tolist() + [-1] * (3 - num)
    np.testing.assert_array_equal(batch["image"][row], want["image"])  # 32 -> 32 px, no flip: unchanged
    assert batch["caption"][row].decode() in want["captions"]


_ORDER_SCRIPT = """
import numpy as np, tensorflow as tf
from xmc_gan_jax.data import input_pipeline as ip, tokenizer as tk
images = [tf.io.encode_png(np.full((9, 9, 3), i, np.uint8)).numpy() for i in range(12)]
records = tf.data.Dataset.from_tensor_slices({"image": images, "captions": [["a", "b c"]] * 12,
                                             "image_id": [str(i) for i in range(12)]})
settings = ip.PipelineSettings(batch_size=4, image_size=8, seed=3, shuffle_buffer=8)
it = ip.DataIterator(ip.train_dataset(records, 12, settings, tk.BertTextTokenizer(tk.default_vocab_path(), 8),
                                      start_step=2), "train")
batches = [next(it) for _ in range(3)]
ORDER = " ".join(b"-".join(b["image_id"]).decode() + "/" + str(b["token_ids"].sum()) for b in batches)
print(ORDER)
"""


def test_order_is_the_same_in_a_fresh_process(tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  script = tmp_path / "order.py"
  script.write_text(_ORDER_SCRIPT)
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
  here = {}
  exec(compile(_ORDER_SCRIPT.replace("print(ORDER)", ""), "order", "exec"), here)  # pylint: disable=exec-used
  assert result.stdout.strip() == here["ORDER"] and len(here["ORDER"].split()) == 3


# ------------------------------------------------------------- damaged TFRecord shards (a small captioned_shapes)
_SHAPES_SIZE = 32


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
  """A prepared captioned_shapes (24 train / 12 validation images, 3 shard files per split) to copy and damage."""
  from xmc_gan_jax.data import shapes_builder  # pylint: disable=import-outside-toplevel
  config = shapes_builder.make_config(_SHAPES_SIZE, num_train=24, num_validation=12)
  data_dir = tmp_path_factory.mktemp("shapes_clean")
  builder = shapes_builder.CaptionedShapes(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
  return config, data_dir


def _damaged_copy(shapes_data, tmp_path, damage):
  """(builder, data_dir) of a copy of shapes_data; damage(shard files by split) changes the files."""
  import shutil  # pylint: disable=import-outside-toplevel
  from xmc_gan_jax.data import shapes_builder  # pylint: disable=import-outside-toplevel
  config, clean_dir = shapes_data
  data_dir = tmp_path / "data"
  shutil.copytree(clean_dir, data_dir)
  builder = shapes_builder.CaptionedShapes(config=config, data_dir=str(data_dir))
  shards = {split: sorted(tf.io.gfile.glob(f"{builder.data_dir}/*-{split}.tfrecord-*"))
            for split in ("train", "validation")}
  assert all(len(files) == 3 for files in shards.values())
  damage(shards)
  return builder, data_dir


def _flip_middle(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _flip_first(path):
  data = bytearray(open(path, "rb").read())
  data[0] ^= 0xFF  # the first record's length: its header checksum fails, nothing of the file is readable
  open(path, "wb").write(bytes(data))


def _truncate(path, fraction):
  data = open(path, "rb").read()
  open(path, "wb").write(data[: int(len(data) * fraction)])


def _readable(path):
  return sum(1 for _ in tf.data.TFRecordDataset(path).ignore_errors())


def _shapes_config(data_dir):
  config = common.get_base_config()
  config.dataset.name = "shapes"
  config.dataset.data_dir = str(data_dir)
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.shuffle_buffer = 8
  config.dataset.random_flip = False
  config.batch_size = 4
  config.model.image_size = _SHAPES_SIZE
  config.text_encoder.max_length = 8
  return config


def _use_builder(monkeypatch, builder):
  """create_*_iterator reads `builder` (the named captioned_shapes/32px config would generate 20,000 images)."""
  monkeypatch.setattr(ip, "load_builder", lambda *args, **kwargs: builder)


def test_shard_reader_keeps_the_tfds_order(shapes_data):
  from xmc_gan_jax.data import shapes_builder  # pylint: disable=import-outside-toplevel
  config, data_dir = shapes_data
  builder = shapes_builder.CaptionedShapes(config=config, data_dir=str(data_dir))
  spec = ip.dataset_spec("shapes", _SHAPES_SIZE)
  for split in ("train", "validation"):
    for count in (1, 2):
      for index in range(count):
        records, num = ip.read_records(builder, spec, split, index, count)
        ids = [r["image_id"] for r in records.as_numpy_iterator()]
        tfds_ids = [str(ex["image/id"]).encode() for ex in builder.as_dataset(
            split=ip.process_split(split, index, count), shuffle_files=False).as_numpy_iterator()]
        assert ids == tfds_ids and num == len(ids)
  # Shards longer than TFDS's interleave block (16 records), so the order depends on the interleave too.
  ids_ds = tf.data.Dataset.from_tensor_slices({"id": np.arange(70, dtype=np.int64)})
  tiny = tfds.dataset_builders.TfDataBuilder(
      name="tiny_ids", version="1.0.0", data_dir=str(data_dir / "tiny"), split_datasets={"train": ids_ds},
      features=tfds.features.FeaturesDict({"id": tfds.features.Scalar(dtype=np.int64)}))
  tiny.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=2))
  tiny_spec = ip.DatasetSpec("tiny_ids", None, lambda example: example)
  for count in (1, 3):
    for index in range(count):
      ids = [int(r["id"]) for r in ip.read_records(tiny, tiny_spec, "train", index, count)[0].as_numpy_iterator()]
      want = [int(ex["id"]) for ex in tiny.as_dataset(split=ip.process_split("train", index, count),
                                                      shuffle_files=False).as_numpy_iterator()]
      assert ids == want


def test_corrupt_train_shard_is_skipped_counted_and_named(shapes_data, tmp_path, monkeypatch, caplog, vocab_path):
  builder, data_dir = _damaged_copy(shapes_data, tmp_path, lambda shards: _flip_middle(shards["train"][1]))
  damaged = _shapes_config(data_dir)
  lost = 8 - _readable(builder.data_dir + "/" + "captioned_shapes-train.tfrecord-00001-of-00003")
  assert 0 < lost < 8
  _use_builder(monkeypatch, builder)
  with caplog.at_level("WARNING"):
    iterator = ip.create_train_iterator(damaged, vocab_path, process_index=0, process_count=1)
    batches = _take(iterator, 6)  # one epoch: 24 - lost records, so it wraps
  assert all(b["image"].shape == (4, _SHAPES_SIZE, _SHAPES_SIZE, 3) for b in batches)
  assert iterator.stats()["skipped_corrupt_records"] in (lost, 2 * lost)  # met once, or twice after the wrap
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("captioned_shapes-train.tfrecord-00001-of-00003" in m and f"remaining {lost} are skipped" in m
             for m in warnings), warnings


def test_eval_on_a_damaged_split_yields_its_batches(shapes_data, tmp_path, monkeypatch, caplog, vocab_path):
  def damage(shards):
    _flip_middle(shards["validation"][0])
    _truncate(shards["validation"][2], 0.6)
  builder, data_dir = _damaged_copy(shapes_data, tmp_path, damage)
  files = sorted(tf.io.gfile.glob(f"{builder.data_dir}/*-validation.tfrecord-*"))
  lost = 12 - sum(_readable(f) for f in files)
  assert lost > 0
  _use_builder(monkeypatch, builder)
  with caplog.at_level("WARNING"):
    iterator = ip.create_eval_iterator(_shapes_config(data_dir), vocab_path, None, 4, process_index=0,
                                       process_count=1)
    batches = list(iterator)
  assert len(batches) == len(iterator) == 3
  assert sum(int(b["valid"].sum()) for b in batches) == 12 - lost
  assert iterator.stats()["skipped_corrupt_records"] == lost
  warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert os.path.basename(files[0]) in warned and os.path.basename(files[2]) in warned


@pytest.mark.parametrize("split,damage", [
    ("train", "corrupt"), ("validation", "corrupt"), ("train", "missing"), ("validation", "empty")])
def test_unreadable_split_names_data_dir_and_split(shapes_data, tmp_path, monkeypatch, vocab_path, split, damage):
  def apply(shards):
    for path in shards[split]:
      if damage == "corrupt":
        _flip_first(path)
      elif damage == "missing":
        os.remove(path)
      else:
        _truncate(path, 0.0)
  builder, data_dir = _damaged_copy(shapes_data, tmp_path, apply)
  _use_builder(monkeypatch, builder)
  config = _shapes_config(data_dir)
  with pytest.raises(RuntimeError) as error:
    if split == "train":
      next(ip.create_train_iterator(config, vocab_path, process_index=0, process_count=1))
    else:
      list(ip.create_eval_iterator(config, vocab_path, None, 4, process_index=0, process_count=1))
  message = str(error.value)
  assert f"split {split!r}" in message and f"data_dir {data_dir}" in message and "captioned_shapes" in message


def test_non_utf8_caption_is_replaced_not_an_error(tokenizer):
  rng = np.random.default_rng(6)
  bad = b"\xff\xfe a red circle"
  items = [(_png(_noise(rng, 10, 10)), [bad])] + [(_png(_noise(rng, 10, 10)), [f"picture {i}"]) for i in range(3)]
  records, count = _records(items)
  records = records.map(lambda r: dict(r, captions=tf.where(r["image_id"] == "0", tf.constant([bad]),
                                                            r["captions"])))
  want_ids, want_mask = tokenizer.tokenize(["a red circle"])  # U+FFFD is dropped as the reference does
  settings = _settings()
  for iterator in (ip.DataIterator(ip.train_dataset(records, count, settings, tokenizer), "train"),
                   ip.DataIterator(ip.eval_dataset(records, count, settings, tokenizer, None, 1), "eval", 1)):
    batch = next(iterator)
    row = batch["image_id"].tolist().index(b"0")
    assert batch["caption"][row] == bad
    assert batch["caption"][row].decode("utf-8", "replace") == "\ufffd\ufffd a red circle"
    np.testing.assert_array_equal(batch["token_ids"][row], want_ids[0])
    np.testing.assert_array_equal(batch["token_mask"][row], want_mask[0])
