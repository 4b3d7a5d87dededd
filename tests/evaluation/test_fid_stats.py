"""FID / KID / IS maths against numpy and scipy re-derivations and closed forms (float64, host only)."""
import numpy as np
import pytest
import scipy.linalg

from xmc_gan_jax.evaluation import fid_stats


def _random_stats(rng, dim, n, scale=1.0, shift=0.0):
  feats = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * scale / np.sqrt(dim) + shift
  return feats.mean(0), np.cov(feats, rowvar=False), feats


def _scipy_fid(mu1, s1, mu2, s2):
  """The TTUR / pytorch-fid formula with scipy's sqrtm (written without the deprecated disp argument)."""
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# --- streaming statistics ---------------------------------------------------------------------------------------


def test_streaming_stats_equal_numpy_mean_and_cov_over_uneven_batches():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(103, 16)) * rng.uniform(0.1, 3, 16) + 50.0  # large offset: cancellation-prone
  acc = fid_stats.StreamingStats(16)
  for start, stop in ((0, 1), (1, 40), (40, 41), (41, 103)):
    acc.update(feats[start:stop].astype(np.float32) if start == 40 else feats[start:stop])
  acc.update(np.zeros((0, 16)))
  feats[40] = feats[40].astype(np.float32)  # the batch given as float32 must be promoted, not truncated later
  np.testing.assert_allclose(acc.mean, feats.mean(0), rtol=0, atol=1e-12)
  np.testing.assert_allclose(acc.covariance(), np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)
  assert acc.count == 103


def test_streaming_stats_merge_equals_one_pass():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(30, 8)) + 3, rng.normal(size=(7, 8)) * 2
  merged = fid_stats.StreamingStats(8).update(a).merge(fid_stats.StreamingStats(8).update(b))
  both = np.concatenate([a, b])
  np.testing.assert_allclose(merged.covariance(), np.cov(both, rowvar=False), rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(merged.mean, both.mean(0), atol=1e-13)


def test_streaming_stats_rejects_bad_input():
  acc = fid_stats.StreamingStats(4)
  with pytest.raises(ValueError, match=r"\[B, 4\]"):
    acc.update(np.zeros((3, 5)))
  with pytest.raises(ValueError, match="NaN"):
    acc.update(np.full((2, 4), np.nan))
  with pytest.raises(ValueError, match="at least 2"):
    acc.update(np.ones((1, 4))).covariance()


# --- Fréchet distance -------------------------------------------------------------------------------------------


def test_fd_of_identical_stats_is_zero_and_symmetric():
  rng = np.random.default_rng(2)
  mu1, s1, _ = _random_stats(rng, 64, 500)
  mu2, s2, _ = _random_stats(rng, 64, 300, scale=1.5, shift=0.2)
  assert abs(fid_stats.frechet_distance(mu1, s1, mu1, s1)) < 1e-8
  d12 = fid_stats.frechet_distance(mu1, s1, mu2, s2)
  d21 = fid_stats.frechet_distance(mu2, s2, mu1, s1)
  assert d12 > 1.0
  assert d12 == pytest.approx(d21, rel=1e-10)


def test_fd_closed_form_for_commuting_covariances():
  rng = np.random.default_rng(3)
  dim = 256
  q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
  a, b = rng.uniform(0, 4, dim), rng.uniform(0, 4, dim)
  a[:20] = 0.0  # singular S1 as well
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert fid_stats.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fd_equal_covariance_is_squared_mean_distance_and_scales_quadratically():
  rng = np.random.default_rng(4)
  mu1, s1, f1 = _random_stats(rng, 32, 200)
  mu2 = mu1 + rng.normal(size=32)
  assert fid_stats.frechet_distance(mu1, s1, mu2, s1) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)
  _, s2, f2 = _random_stats(rng, 32, 200, scale=2.0, shift=1.0)
  base = fid_stats.frechet_distance(f1.mean(0), np.cov(f1.T), f2.mean(0), np.cov(f2.T))
  scaled = fid_stats.frechet_distance(3 * f1.mean(0), np.cov(3 * f1.T), 3 * f2.mean(0), np.cov(3 * f2.T))
  assert scaled / base == pytest.approx(9.0, rel=1e-9)


def test_fd_invariant_to_rotation_and_channel_permutation():
  rng = np.random.default_rng(5)
  _, _, f1 = _random_stats(rng, 24, 100)
  _, _, f2 = _random_stats(rng, 24, 100, shift=0.5)
  fd = lambda x, y: fid_stats.frechet_distance(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T))
  q, _ = np.linalg.qr(rng.normal(size=(24, 24)))
  perm = rng.permutation(24)
  assert fd(f1 @ q, f2 @ q) == pytest.approx(fd(f1, f2), rel=1e-9)
  assert fd(f1[:, perm], f2[:, perm]) == pytest.approx(fd(f1, f2), rel=1e-9)


def test_fd_matches_scipy_sqrtm_on_well_conditioned_stats():
  rng = np.random.default_rng(6)
  mu1, s1, _ = _random_stats(rng, 128, 2000)
  mu2, s2, _ = _random_stats(rng, 128, 1500, scale=1.3, shift=0.1)
  assert fid_stats.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-6)


def test_fd_on_rank_deficient_stats_matches_eigvals_route_and_scipy():
  rng = np.random.default_rng(7)
  # N < D: both covariances are singular (rank 39 and 29 in 128 dimensions), as with small eval sets.
  mu1, s1, _ = _random_stats(rng, 128, 40)
  mu2, s2, _ = _random_stats(rng, 128, 30, shift=0.3)
  eigvals_tr = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
  reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * eigvals_tr
  ours = fid_stats.frechet_distance(mu1, s1, mu2, s2)
  assert ours == pytest.approx(reference, abs=1e-4)
  assert ours == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), abs=1e-3)
  assert ours >= 0.0


def test_fd_rejects_mismatched_or_non_finite_stats():
  with pytest.raises(ValueError, match="shapes"):
    fid_stats.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match="dimensions differ"):
    fid_stats.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="NaN"):
    fid_stats.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


# --- KID ----------------------------------------------------------------------------------------------------------


def _kid_loops(x, y):
  m, d = x.shape
  k = lambda a, b: (a @ b / d + 1.0) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
  return xx + yy - 2 * xy


def test_kid_of_constant_sets_has_closed_form():
  # x = 1, y = 0 in 1-D: k(1,1) + k(0,0) - 2 k(1,0) = 2^3 + 1 - 2 = 7, for any subset.
  mean, std = fid_stats.kernel_inception_distance(np.ones((9, 1)), np.zeros((7, 1)), num_subsets=5,
                                                  subset_size=4)
  assert mean == pytest.approx(7.0, rel=1e-12)
  assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_whole_set_matches_pairwise_loops():
  rng = np.random.default_rng(8)
  x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.4
  mean, std = fid_stats.kernel_inception_distance(x, y, num_subsets=3, subset_size=100)
  assert mean == pytest.approx(_kid_loops(x, y), rel=1e-10)  # m = 12: every subset is the whole set
  assert std < 1e-10


def test_kid_subsets_are_reproducible_and_near_zero_for_one_distribution():
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
  same = fid_stats.kernel_inception_distance(x, y, num_subsets=20, subset_size=200, seed=3)
  assert same == fid_stats.kernel_inception_distance(x, y, num_subsets=20, subset_size=200, seed=3)
  shifted = fid_stats.kernel_inception_distance(x, y + 1.0, num_subsets=20, subset_size=200)
  assert abs(same[0]) < 4 * same[1] / np.sqrt(20) + 1e-3
  assert shifted[0] > 50 * abs(same[0]) and shifted[0] > 0.1


# --- Inception Score ----------------------------------------------------------------------------------------------


def test_is_of_uniform_predictions_is_one():
  mean, std = fid_stats.inception_score_from_probs(np.full((50, 1008), 1 / 1008))
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_of_confident_distinct_classes_is_the_class_count():
  k = 7
  probs = np.tile(np.eye(k), (10, 1))  # each of the 10 splits holds every class once
  assert fid_stats.inception_score_from_probs(probs) == pytest.approx((k, 0.0), abs=1e-9)
  logits = np.tile(np.eye(k) * 80.0, (10, 1))
  assert fid_stats.inception_score(logits) == pytest.approx((k, 0.0), rel=1e-9, abs=1e-9)


def test_is_matches_hand_computed_kl_per_split():
  rng = np.random.default_rng(10)
  logits = rng.normal(size=(20, 4)) * 2
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for part in (p[:10], p[10:]):
    marginal = part.mean(0)
    scores.append(np.exp(np.mean([np.sum(row * np.log(row / marginal)) for row in part])))
  mean, std = fid_stats.inception_score(logits, num_splits=2)
  assert mean == pytest.approx(np.mean(scores), rel=1e-12)
  assert std == pytest.approx(np.std(scores), rel=1e-9)
  assert std > 0


def test_is_rejects_too_few_images_and_bad_probabilities():
  with pytest.raises(ValueError, match="10 splits"):
    fid_stats.inception_score(np.zeros((5, 3)))
  with pytest.raises(ValueError, match="sum"):
    fid_stats.inception_score_from_probs(np.full((10, 3), 0.5))


# --- statistics files -----------------------------------------------------------------------------------------------


def test_stats_round_trip_with_and_without_features(tmp_path):
  rng = np.random.default_rng(11)
  feats = rng.normal(size=(10, 6)).astype(np.float32)
  stats = fid_stats.FeatureStats.from_features(feats, keep_features=True, weights="default_1")
  fid_stats.save_stats(tmp_path / "s.npz", stats)
  loaded = fid_stats.load_stats(tmp_path / "s.npz")
  np.testing.assert_allclose(loaded.mu, feats.astype(np.float64).mean(0), atol=1e-12)
  np.testing.assert_allclose(loaded.sigma, np.cov(feats.astype(np.float64), rowvar=False), atol=1e-12)
  np.testing.assert_array_equal(loaded.features, feats)
  assert (loaded.num_images, loaded.weights) == (10, "default_1")
  # A pytorch-fid / TTUR file has only mu and sigma.
  np.savez(tmp_path / "ttur.npz", mu=stats.mu, sigma=stats.sigma)
  ttur = fid_stats.load_stats(tmp_path / "ttur.npz")
  assert ttur.features is None and ttur.weights == ""
  np.savez(tmp_path / "bad.npz", mean=stats.mu)
  with pytest.raises(ValueError, match="'mu' and 'sigma'"):
    fid_stats.load_stats(tmp_path / "bad.npz")


def test_real_stats_path_encodes_dataset_split_resolution_and_count(tmp_path):
  path = fid_stats.real_stats_path(tmp_path, dataset="coco/2014", split="val", resolution=256,
                                   num_images=30000)
  assert path == tmp_path / "coco-2014_val_256px_n30000_default-1.npz"
  other = fid_stats.real_stats_path(tmp_path, dataset="coco/2014", split="val", resolution=128,
                                    num_images=30000)
  assert other != path
  with pytest.raises(ValueError):
    fid_stats.real_stats_path(tmp_path, dataset="x", split="y", resolution=0, num_images=1)
