"""tools/probe_text_features.py: variance share and linear-probe accuracy on vectors with known answers."""
import importlib.util
import pathlib

import numpy as np
import pytest

from tests.evaluation import shapes_batches
from xmc_gan_jax.data import shapes_scene, sources

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("probe_text_features", ROOT / "tools" / "probe_text_features.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_variance_share_known_answer():
  # Two balanced classes at -1 / +1 on axis 0, spread +-0.5 within each class (class means stay at +-1), and
  # a second axis of pure within-class noise +-1: between SS = N, total SS = N (1 + 0.25 + 1).
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  axis0 = np.array([-1.5, -0.5, -1.5, -0.5, 0.5, 1.5, 0.5, 1.5])
  axis1 = np.array([1, -1, -1, 1, 1, -1, -1, 1], np.float64)
  vectors = np.stack([axis0, axis1], axis=1) + 3.0  # an offset changes nothing
  assert probe.variance_share(vectors, labels) == pytest.approx(1.0 / 2.25)
  assert probe.variance_share(vectors[:, 1:], labels) == pytest.approx(0.0)
  assert probe.variance_share(np.ones((4, 3)), np.array([0, 1, 0, 1])) == 0.0


def test_probe_reads_a_faint_attribute_and_not_an_absent_one():
  rng = np.random.default_rng(0)
  n, width = 600, 20
  labels = rng.integers(0, 3, n)
  vectors = rng.normal(size=(n, width)) * 0.01 + 5.0 * rng.normal(size=(n, 1)) * np.eye(width)[0]
  vectors[np.arange(n), 1 + labels] += 0.05   # faint: far below the dominant axis, but clean
  assert probe.probe_accuracy(vectors, labels) > 0.95
  assert probe.variance_share(vectors, labels) < 0.01
  chance = probe.probe_accuracy(rng.normal(size=(n, width)), labels)
  assert chance < 0.5
  with pytest.raises(ValueError, match="fit_fraction"):
    probe.probe_accuracy(vectors, labels, fit_fraction=1.0)


def test_command_prints_every_attribute(monkeypatch, capsys):
  rng = np.random.default_rng(2)
  scenes = [shapes_scene.sample_scene(rng) for _ in range(64)]
  images = np.stack([shapes_scene.render_scene(s, 32) for s in scenes])
  monkeypatch.setattr(sources, "eval_source", lambda config, vocab_path, vocab_size, num_examples, batch_size,
                      seed_offset=0: shapes_batches.shapes_batches(scenes[:num_examples], images, batch_size))
  assert probe.main(["--captions=64"]) == 0
  out = capsys.readouterr().out
  for attribute in probe.ATTRIBUTES:
    assert f"| {attribute} | " in out
