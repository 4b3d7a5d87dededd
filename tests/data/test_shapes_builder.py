"""Tests for the `captioned_shapes` TFDS builder: offline preparation, the feature contract, determinism by seed."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from xmc_gan_jax.data import shapes_builder
from xmc_gan_jax.data import shapes_scene
from xmc_gan_jax.data import shapes_verifier

pytestmark = pytest.mark.slow  # generates a TFDS dataset


def _prepare(data_dir, **kwargs):
  builder = shapes_builder.CaptionedShapes(config=shapes_builder.make_config(**kwargs), data_dir=str(data_dir))
  builder.download_and_prepare()  # must not touch the network: everything is generated
  return builder


def _read(builder, split):
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  return sorted(examples, key=lambda ex: int(ex["image/id"]))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return _prepare(tmp_path_factory.mktemp("tfds"), image_size=32, num_train=40, num_validation=12, seed=3)


def test_prepares_offline_with_configured_sizes(prepared):
  assert prepared.info.splits["train"].num_examples == 40
  assert prepared.info.splits["validation"].num_examples == 12
  assert prepared.info.full_name.startswith("captioned_shapes/32px_t40_v12_s3")


def test_feature_contract(prepared):
  features = prepared.info.features
  assert isinstance(features["image"], tfds.features.Image) and features["image"].shape == (32, 32, 3)
  assert features["image"].encoding_format == "png"
  assert isinstance(features["captions"], tfds.features.Sequence)
  assert isinstance(features["objects"], tfds.features.Sequence)
  assert set(features["objects"].feature.keys()) == {"color", "shape", "size", "row", "col"}
  examples = _read(prepared, "train")
  assert [int(ex["image/id"]) for ex in examples] == list(range(40))
  for ex in examples:
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (32, 32, 3)
    assert ex["image/id"].dtype == np.int64
    assert len(ex["captions"]) == 5 and all(isinstance(c, bytes) and c for c in ex["captions"])
    objects = ex["objects"]
    n = len(objects["color"])
    assert 1 <= n <= 3 and all(len(objects[k]) == n and objects[k].dtype == np.int64 for k in objects)
    assert set(objects["row"]) <= {0, 1, 2} and set(objects["col"]) <= {0, 1, 2}
    assert len({(r, c) for r, c in zip(objects["row"], objects["col"])}) == n
    for caption in ex["captions"]:  # every caption names every object's colour
      for color in objects["color"]:
        assert shapes_scene.COLOR_NAMES[color].encode() in caption


def test_stored_examples_equal_generated_and_pass_verifier(prepared):
  for split in ("train", "validation"):
    examples = _read(prepared, split)
    for ex in examples[:5]:
      expected = shapes_builder.generate_example(prepared.builder_config, split, int(ex["image/id"]))
      np.testing.assert_array_equal(ex["image"], expected["image"])  # PNG is lossless
      assert [c.decode() for c in ex["captions"]] == expected["captions"]
    scenes = [[shapes_scene.SceneObject(*(int(ex["objects"][k][j]) for k in ("color", "shape", "size", "row",
                                                                                "col")))
               for j in range(len(ex["objects"]["color"]))] for ex in examples]
    scores = shapes_verifier.score_images(np.stack([ex["image"] for ex in examples]),
                                          shapes_scene.pad_objects(scenes))
    assert scores["all"].all()


def test_deterministic_by_seed(prepared, tmp_path):
  again = _prepare(tmp_path, image_size=32, num_train=40, num_validation=12, seed=3)
  for split in ("train", "validation"):
    for a, b in zip(_read(prepared, split), _read(again, split)):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["captions"], b["captions"])
  config = prepared.builder_config
  other_seed = shapes_builder.make_config(32, 40, 12, seed=4)
  first = shapes_builder.generate_example(config, "train", 0)
  assert not np.array_equal(first["image"], shapes_builder.generate_example(other_seed, "train", 0)["image"])
  assert first["captions"] != shapes_builder.generate_example(config, "validation", 0)["captions"]


def test_registered_configs(tmp_path):
  assert "captioned_shapes" in tfds.list_builders(with_community_datasets=False)
  builder = tfds.builder("captioned_shapes/32px", data_dir=str(tmp_path))
  config = builder.builder_config
  assert (config.image_size, config.num_train, config.num_validation) == (32, 20_000, 2_000)
  assert builder.info.features["image"].shape == (32, 32, 3)
  default = tfds.builder("captioned_shapes", data_dir=str(tmp_path))
  assert default.builder_config.name == "64px" and default.info.features["image"].shape == (64, 64, 3)


def test_object_count_probs_configurable():
  config = shapes_builder.make_config(32, 10, 0, object_count_probs=(0.0, 0.0, 1.0))
  assert all(len(shapes_builder.generate_example(config, "train", i)["objects"]["color"]) == 3 for i in range(10))


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 8}, "image_size"),
    ({"num_train": -1}, "Split sizes"),
    ({"object_count_probs": (0.5, 0.2)}, "object_count_probs"),
    ({"jitter": 2.0}, "jitter"),
    ({"num_captions": 0}, "num_captions"),
])
def test_bad_configs_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    shapes_builder.make_config(**kwargs)


def test_unknown_split_raises():
  with pytest.raises(ValueError, match="split"):
    shapes_builder.generate_example(shapes_builder.make_config(32, 1, 1), "test", 0)
