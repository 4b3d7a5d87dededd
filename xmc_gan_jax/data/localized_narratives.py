"""Localized Narratives (Pont-Tuset et al., ECCV 2020) as a TFDS dataset: narratives joined with their images.

One example per narrative (one JSONL line), as LN publishes them; some images have several narratives.
Configs and splits (narratives):
  coco:        train 134,272 (COCO 2017 train images), validation 8,573 (COCO 2017 val images)
  open_images: train 507,444, validation 41,691, test 126,020 (Open Images V6 images)

Manual directory layout (annotation files from https://google.github.io/localized-narratives/, images from
cocodataset.org / the Open Images download; `annotations/` and `images/` may also be left out, i.e. the files
may sit directly in MANUAL_DIR):
  MANUAL_DIR/annotations/coco_train_localized_narratives-0000{0..3}-of-00004.jsonl
                          (or one concatenated coco_train_localized_narratives.jsonl)
  MANUAL_DIR/annotations/coco_val_localized_narratives.jsonl
  MANUAL_DIR/annotations/open_images_train_v6_localized_narratives-0000{0..9}-of-00010.jsonl
  MANUAL_DIR/annotations/open_images_{validation,test}_localized_narratives.jsonl
  MANUAL_DIR/images/train2017/000000137576.jpg   COCO 2017 file names: image_id zero-padded to 12 digits
  MANUAL_DIR/images/val2017/...
  MANUAL_DIR/images/{train,validation,test}/<image_id>.jpg   Open Images (image_id: 16 hex digits)
Prepare (once; checks that every referenced image exists before writing anything):
  python -m xmc_gan_jax.data.localized_narratives --config=coco --manual_dir=MANUAL_DIR --data_dir=DATA_DIR
Features kept: image (encoded bytes, not re-encoded), image/id, image/filename, caption, annotator_id,
dataset_id. Mouse traces, timed utterances and voice recordings are not stored.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Iterator

import tensorflow as tf
import tensorflow_datasets as tfds

NAME = "localized_narratives"
# Narratives per split as published by LN.
SPLIT_SIZES = {
    "coco": {"train": 134_272, "validation": 8_573},
    "open_images": {"train": 507_444, "validation": 41_691, "test": 126_020},
}
# Annotation file names per split: `<prefix>.jsonl` or its shards `<prefix>-NNNNN-of-NNNNN.jsonl`.
_ANNOTATION_PREFIXES = {
    "coco": {"train": ("coco_train_localized_narratives",), "validation": ("coco_val_localized_narratives",)},
    "open_images": {"train": ("open_images_train_v6_localized_narratives", "open_images_train_localized_narratives"),
                    "validation": ("open_images_validation_localized_narratives",),
                    "test": ("open_images_test_localized_narratives",)},
}
_IMAGE_SUBDIRS = {"coco": {"train": "train2017", "validation": "val2017"},
                  "open_images": {"train": "train", "validation": "validation", "test": "test"}}


def image_filename(config_name: str, image_id: str) -> str:
  """File name of an LN image: COCO 2017 zero-pads the numeric id to 12 digits; Open Images uses the id."""
  if config_name == "coco":
    return f"{int(image_id):012d}.jpg"
  return f"{image_id}.jpg"


def annotation_files(manual_dir: str, config_name: str, split: str) -> list[str]:
  """The split's JSONL files found in manual_dir or manual_dir/annotations, shards in order."""
  files = []
  for folder in (os.path.join(manual_dir, "annotations"), manual_dir):
    if not tf.io.gfile.isdir(folder):
      continue
    names = tf.io.gfile.listdir(folder)
    for prefix in _ANNOTATION_PREFIXES[config_name][split]:
      shards = sorted(n for n in names if re.fullmatch(re.escape(prefix) + r"-\d{5}-of-\d{5}\.jsonl", n))
      if shards and f"{prefix}.jsonl" in names:
        raise ValueError(f"{folder} holds both {prefix}.jsonl and its shards; keep one form (same narratives).")
      files += [os.path.join(folder, n) for n in shards or [f"{prefix}.jsonl"] if n in names]
    if files:
      return files
  return files


def _image_dir(manual_dir: str, config_name: str, split: str) -> str:
  subdir = _IMAGE_SUBDIRS[config_name][split]
  for folder in (os.path.join(manual_dir, "images", subdir), os.path.join(manual_dir, subdir)):
    if tf.io.gfile.isdir(folder):
      return folder
  raise FileNotFoundError(
      f"Localized Narratives {config_name}/{split}: no image folder {manual_dir}/images/{subdir} (or "
      f"{manual_dir}/{subdir}). See the manual directory layout in xmc_gan_jax/data/localized_narratives.py.")


def read_narratives(path: str) -> Iterator[tuple[int, dict]]:
  """(line number, record) for each non-blank line of an LN JSONL file; a malformed line raises ValueError."""
  with tf.io.gfile.GFile(path, "r") as f:
    for line_number, line in enumerate(f):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        _ = record["image_id"], record["caption"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{line_number + 1} is not a Localized Narratives record ({e!r}).") from e
      yield line_number, record


class LocalizedNarrativesConfig(tfds.core.BuilderConfig):
  """One LN image source (coco or open_images)."""


class LocalizedNarratives(tfds.core.GeneratorBasedBuilder):
  """Localized Narratives captions with their images (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Narratives from the LN JSONL files joined with COCO 2017 / Open Images V6 images."}
  BUILDER_CONFIGS = [
      LocalizedNarrativesConfig(name="coco", description="LN-COCO: narratives on COCO 2017 images."),
      LocalizedNarrativesConfig(name="open_images", description="LN-OpenImages: narratives on Open Images V6."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download the LN JSONL annotation files of the config's splits from "
      "https://google.github.io/localized-narratives/ into MANUAL_DIR/annotations/, and the images into "
      "MANUAL_DIR/images/: COCO 2017 train2017/ and val2017/ (cocodataset.org) for `coco`; Open Images V6 "
      "train/, validation/, test/ (<image_id>.jpg) for `open_images`.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Localized Narratives: one spoken-then-transcribed image description per example.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image/id": tfds.features.Text(),
            "image/filename": tfds.features.Text(),
            "caption": tfds.features.Text(),
            "annotator_id": tfds.features.Scalar(dtype=tf.int64),
            "dataset_id": tfds.features.Text(),
        }),
        homepage="https://google.github.io/localized-narratives/",
        citation="Pont-Tuset, Uijlings, Changpinyo, Soricut, Ferrari. Connecting Vision and Language with "
                 "Localized Narratives. ECCV 2020.",
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    name = self.builder_config.name
    generators = {}
    for split in SPLIT_SIZES[name]:
      files = annotation_files(manual_dir, name, split)
      if not files:
        raise FileNotFoundError(
            f"No {name}/{split} annotation file ({_ANNOTATION_PREFIXES[name][split][0]}*.jsonl) in {manual_dir} "
            f"or {manual_dir}/annotations. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
      image_dir = _image_dir(manual_dir, name, split)
      _check_images_exist(files, image_dir, name)
      generators[split] = self._generate_examples(files, image_dir)
    return generators

  def _generate_examples(self, files: list[str], image_dir: str):
    name = self.builder_config.name
    for path in files:
      for line_number, record in read_narratives(path):
        filename = image_filename(name, str(record["image_id"]))
        yield f"{os.path.basename(path)}:{line_number}", {
            "image": os.path.join(image_dir, filename),
            "image/id": str(record["image_id"]),
            "image/filename": filename,
            "caption": record["caption"],
            "annotator_id": int(record.get("annotator_id", -1)),
            "dataset_id": str(record.get("dataset_id", "")),
        }


_IMAGE_ID = re.compile(r'"image_id"\s*:\s*"?([^",}\s]+)')


def _image_ids(path: str) -> Iterator[str]:
  """image_id of each line, by a regular expression (the lines also hold long mouse traces: json is slow)."""
  with tf.io.gfile.GFile(path, "r") as f:
    for line_number, line in enumerate(f):
      if line.strip():
        match = _IMAGE_ID.search(line)
        if not match:
          raise ValueError(f"{path}:{line_number + 1} has no image_id.")
        yield match.group(1)


def _check_images_exist(files: list[str], image_dir: str, config_name: str) -> None:
  """Fails before any writing if the files hold no narrative or one refers to an image missing from image_dir."""
  present = set(tf.io.gfile.listdir(image_dir))
  needed = {image_filename(config_name, image_id) for path in files for image_id in _image_ids(path)}
  if not needed:
    raise ValueError(f"{[os.path.basename(f) for f in files]} hold no narratives (empty files?).")
  missing = sorted(needed - present)
  if missing:
    raise FileNotFoundError(
        f"{len(missing)} images referred to by {[os.path.basename(f) for f in files]} are missing from "
        f"{image_dir}, e.g. {missing[:5]}. Download the full image set (see the module docstring).")


def decoders() -> tfds.decode.PartialDecoding:
  """Reads image (left encoded), image/id and caption."""
  return tfds.decode.PartialDecoding({"image": True, "image/id": True, "caption": True},
                                     decoders={"image": tfds.decode.SkipDecoding()})


def standardize(example: dict) -> dict[str, tf.Tensor]:
  """LN example → {"image": encoded string [], "captions": string [1], "image_id": string []}."""
  return {"image": example["image"], "captions": tf.reshape(example["caption"], [1]),
          "image_id": example["image/id"]}


def prepare_hint(config_name: str) -> str:
  return (f"python -m xmc_gan_jax.data.localized_narratives --config={config_name} --manual_dir=MANUAL_DIR "
          "--data_dir=DATA_DIR (layout: xmc_gan_jax/data/localized_narratives.py), then set "
          "config.dataset.data_dir=DATA_DIR")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Prepare the Localized Narratives TFDS dataset.")
  parser.add_argument("--config", choices=sorted(SPLIT_SIZES), required=True)
  parser.add_argument("--manual_dir", required=True, help="annotations/ and images/ (see module docstring)")
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir to write to (default: TFDS default)")
  args = parser.parse_args(argv)
  builder = tfds.builder(f"{NAME}/{args.config}", data_dir=args.data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  for split, info in builder.info.splits.items():
    expected = SPLIT_SIZES[args.config].get(split)
    note = "" if expected in (None, info.num_examples) else f" (LN publishes {expected}: partial annotations?)"
    print(f"{builder.info.full_name} {split}: {info.num_examples} examples{note}")


if __name__ == "__main__":
  main()
