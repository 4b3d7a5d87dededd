"""The Localized Narratives TFDS builder on tiny JSONL + JPEG files written in LN's real format."""
import io
import json

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import ln_coco
from configs import ln_openimages
from xmc_gan_jax.data import input_pipeline as ip
from xmc_gan_jax.data import localized_narratives as ln
from xmc_gan_jax.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.slow  # builds TFDS datasets

LONG_NARRATIVE = ("In this image I can see a person standing on the road and holding an umbrella and behind him "
                  "there are buildings, trees, poles, street lights and vehicles, and in the background I can "
                  "see the sky with clouds and on the left side there is a board with some text on it.")


def _jpeg(rng, height, width):
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG")
  return buffer.getvalue()


def _narrative(dataset_id, image_id, annotator_id, caption):
  """One line of an LN JSONL file, with every published field."""
  return json.dumps({
      "dataset_id": dataset_id, "image_id": image_id, "annotator_id": annotator_id, "caption": caption,
      "timed_caption": [{"utterance": caption.split()[0], "start_time": 0.0, "end_time": 0.4}],
      "traces": [[{"x": 0.2086, "y": -0.0533, "t": 0.022}, {"x": 0.31, "y": 0.12, "t": 0.05}]],
      "voice_recording": f"{dataset_id}/{dataset_id}_{image_id}_{annotator_id}.ogg"})


def _write_split(root, annotation_dir, files, image_dir, dataset_id, narratives, rng, name_fn):
  """files: JSONL names (shards) the narratives are spread over; narratives: (image_id, annotator, caption)."""
  (root / annotation_dir).mkdir(parents=True, exist_ok=True)
  (root / image_dir).mkdir(parents=True, exist_ok=True)
  image_bytes = {}
  for image_id, _, _ in narratives:
    if image_id not in image_bytes:
      image_bytes[image_id] = _jpeg(rng, int(rng.integers(9, 30)), int(rng.integers(9, 30)))
      (root / image_dir / name_fn(image_id)).write_bytes(image_bytes[image_id])
  for k, file_name in enumerate(files):
    lines = [_narrative(dataset_id, *n) for n in narratives[k::len(files)]]
    (root / annotation_dir / file_name).write_text("\n".join(lines) + "\n")
  return image_bytes


COCO_TRAIN = [("391895", 93, "A man rides a bike."), ("522418", 7, "A woman cuts a cake."),
              ("391895", 12, "A person on a bicycle."), ("184613", 5, LONG_NARRATIVE),
              ("318219", 93, "A kitchen with a stove.")]
COCO_VAL = [("137576", 93, "Cows standing and eating grass."), ("397133", 41, "A man in a kitchen.")]


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("ln_coco")
  rng = np.random.default_rng(0)
  name_fn = lambda i: ln.image_filename("coco", i)
  train_bytes = _write_split(root / "manual", "annotations", [
      "coco_train_localized_narratives-00000-of-00002.jsonl", "coco_train_localized_narratives-00001-of-00002.jsonl"],
                             "images/train2017", "mscoco_train2017", COCO_TRAIN, rng, name_fn)
  val_bytes = _write_split(root / "manual", "annotations", ["coco_val_localized_narratives.jsonl"],
                           "images/val2017", "mscoco_val2017", COCO_VAL, rng, name_fn)
  builder = tfds.builder("localized_narratives/coco", data_dir=str(root / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  return builder, {**train_bytes, **val_bytes}, root


def _read_all(builder, split):
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return [{k: v.numpy() for k, v in ex.items()} for ex in ds]


def test_image_file_names():
  assert ln.image_filename("coco", "137576") == "000000137576.jpg"
  assert ln.image_filename("open_images", "0000b9fcba019d36") == "0000b9fcba019d36.jpg"


def test_coco_config_joins_narratives_with_images(coco_dataset):
  builder, image_bytes, _ = coco_dataset
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 5, "validation": 2}
  for split, narratives in (("train", COCO_TRAIN), ("validation", COCO_VAL)):
    examples = _read_all(builder, split)
    got = sorted((e["image/id"].decode(), int(e["annotator_id"]), e["caption"].decode()) for e in examples)
    assert got == sorted((i, a, c) for i, a, c in narratives)
    for example in examples:
      image_id = example["image/id"].decode()
      assert example["image"] == image_bytes[image_id]  # stored as given, not re-encoded
      assert example["image/filename"].decode() == f"{int(image_id):012d}.jpg"
      assert example["dataset_id"].decode() == ("mscoco_train2017" if split == "train" else "mscoco_val2017")


def test_pipeline_on_ln_coco(coco_dataset):
  builder, _, _ = coco_dataset
  config = ln_coco.get_config("res=128")
  assert config.text_encoder.max_length == 64 and config.dataset.name == "ln_coco"
  config.dataset.data_dir = str(builder.data_dir_root)
  config.batch_size = 2
  config.model.image_size = 16
  config.text_encoder.max_length = 16
  vocab = tokenizer_lib.default_vocab_path()
  iterator = ip.create_train_iterator(config, vocab, process_index=0, process_count=1)
  by_caption = {c: i for i, _, c in COCO_TRAIN}
  for _ in range(6):  # 3 epochs of 2 steps
    batch = next(iterator)
    assert batch["image"].shape == (2, 16, 16, 3)
    for caption, image_id in zip(batch["caption"], batch["image_id"]):
      assert by_caption[caption.decode()] == image_id.decode()
  assert iterator.stats()["truncated_caption"] >= 1  # the long narrative, whenever it was drawn
  evaluation = ip.create_eval_iterator(config, vocab, None, 2, process_index=0, process_count=1)
  captions = sorted(c.decode() for b in evaluation for c in b["caption"])
  assert captions == sorted(c for _, _, c in COCO_VAL)


def test_open_images_config_three_splits_annotations_in_root(tmp_path):
  rng = np.random.default_rng(1)
  name_fn = lambda i: ln.image_filename("open_images", i)
  manual = tmp_path / "manual"
  splits = {"train": [("0000b9fcba019d36", 1, "A dog on grass."), ("00012ba3b6cc0d4a", 2, "Two cars."),
                      ("0001eeaf4aed83f9", 3, "A plane.")],
            "validation": [("0001a1f0d1c3e6b7", 4, "A red house.")],
            "test": [("000026e7ee790996", 5, "A cat."), ("000062a39995e348", 6, "A boat.")]}
  _write_split(manual, ".", [f"open_images_train_v6_localized_narratives-0000{k}-of-00002.jsonl" for k in (0, 1)],
               "images/train", "open_images_train_v6", splits["train"], rng, name_fn)
  _write_split(manual, ".", ["open_images_validation_localized_narratives.jsonl"], "validation",
               "open_images_validation", splits["validation"], rng, name_fn)  # images without images/
  _write_split(manual, ".", ["open_images_test_localized_narratives.jsonl"], "images/test",
               "open_images_test", splits["test"], rng, name_fn)
  ln.main(["--config=open_images", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'tfds'}"])
  builder = tfds.builder("localized_narratives/open_images", data_dir=str(tmp_path / "tfds"))
  for split, narratives in splits.items():
    got = sorted((e["image/id"].decode(), e["caption"].decode()) for e in _read_all(builder, split))
    assert got == sorted((i, c) for i, _, c in narratives)
  assert ln_openimages.get_config().dataset.name == "ln_openimages"
  assert ip.dataset_spec("ln_openimages", 256).tfds_name == "localized_narratives/open_images"


def _coco_manual(tmp_path, train_lines, val_lines=(_narrative("mscoco_val2017", "137576", 93, "Cows."),)):
  """A manual dir with images 391895 (train2017) and 137576 (val2017) and the given JSONL lines."""
  manual = tmp_path / "manual"
  (manual / "annotations").mkdir(parents=True)
  rng = np.random.default_rng(2)
  for folder, image_id in (("train2017", "391895"), ("val2017", "137576")):
    (manual / "images" / folder).mkdir(parents=True)
    (manual / "images" / folder / ln.image_filename("coco", image_id)).write_bytes(_jpeg(rng, 9, 9))
  for split, lines in (("train", train_lines), ("val", val_lines)):
    (manual / "annotations" / f"coco_{split}_localized_narratives.jsonl").write_text("".join(
        line + "\n" for line in lines))
  return manual


def _prepare(tmp_path, manual):
  builder = tfds.builder("localized_narratives/coco", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_missing_image_fails_before_writing(tmp_path):
  manual = _coco_manual(tmp_path, [_narrative("mscoco_train2017", "391895", 1, "ok"),
                                   _narrative("mscoco_train2017", "42", 2, "no image")])
  with pytest.raises(FileNotFoundError, match="000000000042.jpg"):
    _prepare(tmp_path, manual)


def test_empty_annotation_file_is_reported(tmp_path):
  manual = _coco_manual(tmp_path, [_narrative("mscoco_train2017", "391895", 1, "ok")], val_lines=())
  with pytest.raises(ValueError, match="no narratives"):
    _prepare(tmp_path, manual)


def test_missing_annotations_and_bad_lines_are_reported(tmp_path):
  manual = _coco_manual(tmp_path, [_narrative("mscoco_train2017", "391895", 1, "ok"), '{"image_id": "391895"}'])
  with pytest.raises(ValueError, match=r"coco_train_localized_narratives.jsonl:2"):
    _prepare(tmp_path, manual)
  (manual / "annotations" / "coco_val_localized_narratives.jsonl").unlink()
  with pytest.raises(FileNotFoundError, match="coco_val_localized_narratives"):
    _prepare(tmp_path, manual)


def test_sharded_and_whole_annotation_files_are_not_mixed(tmp_path):
  manual = _coco_manual(tmp_path, [_narrative("mscoco_train2017", "391895", 1, "ok")])
  (manual / "annotations" / "coco_train_localized_narratives-00000-of-00001.jsonl").write_text(
      _narrative("mscoco_train2017", "391895", 1, "ok") + "\n")
  with pytest.raises(ValueError, match="both"):
    ln.annotation_files(str(manual), "coco", "train")


def test_pipeline_prepares_ln_on_first_use_only_with_a_manual_dir(tmp_path):
  manual = _coco_manual(tmp_path, [_narrative("mscoco_train2017", "391895", 1, "A man rides a bike.")])
  config = ln_coco.get_config()
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.batch_size = 1
  config.model.image_size = 8
  vocab = tokenizer_lib.default_vocab_path()
  with pytest.raises(FileNotFoundError, match="localized_narratives --config=coco"):
    ip.create_train_iterator(config, vocab, process_index=0, process_count=1)   # no manual_dir
  config.dataset.manual_dir = str(manual)
  config.batch_size = 2
  with pytest.raises(FileNotFoundError, match="not prepared"):
    ip.create_train_iterator(config, vocab, process_index=0, process_count=2)   # multi-process: prepare first
  config.batch_size = 1
  batch = next(ip.create_train_iterator(config, vocab, process_index=0, process_count=1))
  assert batch["caption"].tolist() == [b"A man rides a bike."]
