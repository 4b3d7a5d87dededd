"""The sampling command on a test-config checkpoint (default MiniLM encoder): the real `python -m` path, the
same seed giving the same PNG bytes (across processes), another seed other images, --out-dir single images equal
to the grid's cells, the config rebuilt from the checkpoint, and clear errors for bad input."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import test as test_config
from xmc_gan_jax import checkpointing
from xmc_gan_jax import sample
from xmc_gan_jax import sharding
from xmc_gan_jax import train

pytestmark = pytest.mark.slow  # trains a workdir and runs the command line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a small red circle in the top left", "a big blue square in the middle"]
CELL = 192  # captioned_grid's default cell width; 32 px images are upscaled 6x (nearest)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir with one checkpoint (step 1) of the test config; the config lives only in the checkpoint meta."""
  path = tmp_path_factory.mktemp("sample") / "run"
  config = test_config.get_config()
  config.seed = 3
  trainer = train.Trainer(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:2]))
  checkpointer = checkpointing.Checkpointer(str(path))
  checkpointer.save(1, trainer.init_state(), {"config": config.to_json_best_effort()})
  checkpointer.close()
  return path


def _cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "xmc_gan_jax.sample", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _png(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def test_same_seed_same_png_bytes_other_seed_other_images(workdir, tmp_path, capsys):
  prompt_args = [f"--prompt={p}" for p in PROMPTS]
  result = _cli(f"--workdir={workdir}", *prompt_args, "--num=2", "--seed=0", f"--out={tmp_path / 'a.png'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "4 images (2 prompts x 2) from the EMA generator of step 1, seed 0" in result.stdout
  # The same command in this process (other device count, other process) gives the same bytes.
  assert sample.main([f"--workdir={workdir}", *prompt_args, "--num=2", "--seed=0",
                      f"--out={tmp_path / 'b.png'}"]) == 0
  assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
  assert sample.main([f"--workdir={workdir}", *prompt_args, "--num=2", "--seed=1",
                      f"--out={tmp_path / 'c.png'}"]) == 0
  grid_a, grid_c = _png(tmp_path / "a.png"), _png(tmp_path / "c.png")
  assert grid_a.shape == grid_c.shape
  assert grid_a.shape[1] == 2 * (CELL + 4) + 4  # one column per sample, one row per prompt
  cells_a = _cells(grid_a, 2, 2)
  cells_c = _cells(grid_c, 2, 2)
  for a, c in zip(cells_a, cells_c):
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0  # a new seed changes every image
  assert np.abs(cells_a[0].astype(int) - cells_a[1].astype(int)).mean() > 1.0  # samples differ within a prompt
  capsys.readouterr()


def _cells(grid, rows, columns, text_height=4 * 12 + 4):
  """The 32 px images inside a captioned grid (row-major), undoing the 6x nearest upscaling."""
  out = []
  for r in range(rows):
    for c in range(columns):
      top, left = 4 + r * (CELL + text_height + 4), 4 + c * (CELL + 4)
      out.append(grid[top:top + CELL:6, left:left + CELL:6])
  return out


def test_out_dir_writes_one_png_per_prompt(workdir, tmp_path):
  prompts_file = tmp_path / "prompts.txt"
  prompts_file.write_text("# comment\n\na green triangle at the bottom\n", encoding="utf-8")
  out_dir = tmp_path / "single"
  args = [f"--workdir={workdir}", *[f"--prompt={p}" for p in PROMPTS], f"--prompts-file={prompts_file}",
          "--num=1", "--seed=0", f"--out-dir={out_dir}", f"--out={tmp_path / 'grid.png'}"]
  assert sample.main(args) == 0
  assert sorted(os.listdir(out_dir)) == ["000.png", "001.png", "002.png", "prompts.txt"]
  assert (out_dir / "prompts.txt").read_text().splitlines()[2] == "002\ta green triangle at the bottom"
  singles = [_png(out_dir / f"{i:03d}.png") for i in range(3)]
  assert all(s.shape == (32, 32, 3) for s in singles)
  # The single images are the grid's cells; sample 0 of a prompt does not depend on --num or the other prompts.
  grid_cells = _cells(_png(tmp_path / "grid.png"), 1, 3)
  for single, cell in zip(singles, grid_cells):
    np.testing.assert_array_equal(single, cell)
  assert sample.main([f"--workdir={workdir}", f"--prompt={PROMPTS[1]}", "--num=2", "--seed=0",
                      f"--out-dir={tmp_path / 'two'}"]) == 0
  np.testing.assert_array_equal(_png(tmp_path / "two" / "000_00.png"), singles[1])
  assert not np.array_equal(_png(tmp_path / "two" / "000_01.png"), singles[1])


@pytest.mark.parametrize("make_args,message", [
    (lambda w, t: [f"--workdir={t / 'nope'}", "--prompt=x", "--out=o.png"], "does not exist"),
    (lambda w, t: [f"--workdir={t}", "--prompt=x", "--out=o.png"], "No checkpoint in"),
    (lambda w, t: [f"--workdir={w}", "--prompt=x", "--out=o.png", "--step=99"], r"available steps: [1]"),
    (lambda w, t: [f"--workdir={w}", "--out=o.png"], "No prompts"),
    (lambda w, t: [f"--workdir={w}", "--prompt=  ", "--out=o.png"], "Prompt 0 is empty"),
    (lambda w, t: [f"--workdir={w}", "--prompt=x"], "--out=grid.png and/or --out-dir"),
    (lambda w, t: [f"--workdir={w}", "--prompt=x", "--out=o.png", "--num=0"], "--num must be >= 1"),
    (lambda w, t: [f"--workdir={w}", f"--prompts-file={t / 'missing.txt'}", "--out=o.png"], "does not exist"),
])
def test_bad_input_is_a_clear_error(workdir, tmp_path, capsys, make_args, message):
  assert sample.main(make_args(workdir, tmp_path)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err, err


def test_config_falls_back_to_config_json(tmp_path):
  class NoMeta:
    def restore_meta(self, step):
      raise FileNotFoundError(step)

  (tmp_path / "config.json").write_text(json.dumps({"model": {"z_dim": 7}}))
  assert sample.load_run_config(str(tmp_path), NoMeta(), 1).model.z_dim == 7
  with pytest.raises(FileNotFoundError, match="holds the run's config"):
    sample.load_run_config(str(tmp_path / "empty"), NoMeta(), 1)


def test_noise_is_a_function_of_the_seed():
  a = sample.sample_noise(0, 3, 16)
  np.testing.assert_array_equal(a, sample.sample_noise(0, 3, 16))
  np.testing.assert_array_equal(a[:1], sample.sample_noise(0, 1, 16))
  assert not np.array_equal(a, sample.sample_noise(1, 3, 16))
  assert a.dtype == np.float32 and abs(float(a.mean())) < 1.0
