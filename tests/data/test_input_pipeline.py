"""tf.data pipelines: contract, resize/flip against numpy, skips, determinism, resume, sharding, eval padding."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from xmc_gan_jax.data import coco
from xmc_gan_jax.data import input_pipeline as ip
from xmc_gan_jax.data import tokenizer as tokenizer_lib


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
                              "truncated_caption": 1}
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
