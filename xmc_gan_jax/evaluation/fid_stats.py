"""FID / KID / IS maths in float64 numpy on the host, plus feature-statistics files.

- `StreamingStats`: running mean and covariance of features [N, D] (Chan's parallel update, float64);
  `covariance()` equals `np.cov(features, rowvar=False)` (ddof = 1). Accumulators merge (hosts, batches).
- `frechet_distance`: ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1 S2)^(1/2), with the trace of the square root
  from the symmetric route tr (R S2 R)^(1/2), R = S1^(1/2) (eigh only; real output; singular S allowed).
- `kernel_inception_distance`: unbiased MMD^2 with the cubic kernel (x.y / D + 1)^3, averaged over subsets.
- `inception_score`: exp(E_x KL(p(y|x) || p(y))) over 10 splits, from logits or probabilities.
- `save_stats` / `load_stats`: .npz with 'mu', 'sigma' (the pytorch-fid/TTUR keys), 'num_images', optional
  'features'; `real_stats_path` names the cache file of real-image statistics. Files may be local or gs://...
  (etils.epath).
"""
import dataclasses
import io
import re

import numpy as np
from etils import epath


class StreamingStats:
  """Accumulates the mean and (ddof = 1) covariance of D-dimensional features in float64."""

  def __init__(self, dim: int):
    self.dim = int(dim)
    self.count = 0
    self._mean = np.zeros(dim, np.float64)
    self._m2 = np.zeros((dim, dim), np.float64)  # sum of outer products of deviations from the mean

  def update(self, features) -> "StreamingStats":
    """Adds a batch of features [B, D] (any float dtype; promoted to float64)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f"Expected features of shape [B, {self.dim}], got {x.shape}.")
    if not np.all(np.isfinite(x)):
      raise ValueError("Features contain NaN or inf.")
    if x.shape[0] == 0:
      return self
    batch_mean = x.mean(axis=0)
    centred = x - batch_mean
    self._combine(x.shape[0], batch_mean, centred.T @ centred)
    return self

  def merge(self, other: "StreamingStats") -> "StreamingStats":
    """Adds another accumulator's data (e.g. from another host) into this one."""
    if other.dim != self.dim:
      raise ValueError(f"Cannot merge stats of dimension {other.dim} into {self.dim}.")
    if other.count:
      self._combine(other.count, other._mean, other._m2)
    return self

  def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
    n_a = self.count
    n = n_a + n_b
    delta = mean_b - self._mean
    self._mean = self._mean + delta * (n_b / n)
    self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
    self.count = n

  @property
  def mean(self) -> np.ndarray:
    if self.count == 0:
      raise ValueError("No features were added.")
    return self._mean.copy()

  def covariance(self) -> np.ndarray:
    if self.count < 2:
      raise ValueError(f"The covariance needs at least 2 feature vectors, got {self.count}.")
    return self._m2 / (self.count - 1)


def _check_stats(mu, sigma, name: str) -> tuple[np.ndarray, np.ndarray]:
  mu = np.atleast_1d(np.asarray(mu, np.float64))
  sigma = np.atleast_2d(np.asarray(sigma, np.float64))
  if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
    raise ValueError(f"{name}: mean {mu.shape} and covariance {sigma.shape} shapes do not fit.")
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise ValueError(f"{name}: statistics contain NaN or inf.")
  return mu, 0.5 * (sigma + sigma.T)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a PSD matrix; tiny negative eigenvalues (round-off) are clipped to 0."""
  w, v = np.linalg.eigh(sigma)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr (S1 S2)^(1/2) for symmetric PSD S1, S2, as tr (R S2 R)^(1/2) with R = S1^(1/2)."""
  r = _psd_sqrt(sigma1)
  inner = r @ sigma2 @ r
  w = np.linalg.eigvalsh(0.5 * (inner + inner.T))
  return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) in float64 (units: squared feature units)."""
  mu1, sigma1 = _check_stats(mu1, sigma1, "first")
  mu2, sigma2 = _check_stats(mu2, sigma2, "second")
  if mu1.shape != mu2.shape:
    raise ValueError(f"Feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}.")
  diff = mu1 - mu2
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
  return float(max(value, 0.0))


def _polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 between equal-size samples with k(a, b) = (a.b / D + 1)^3."""
  m, dim = x.shape
  k_xx = (x @ x.T / dim + 1.0) ** 3
  k_yy = (y @ y.T / dim + 1.0) ** 3
  k_xy = (x @ y.T / dim + 1.0) ** 3
  off_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
  off_yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(off_xx + off_yy - 2.0 * k_xy.mean())


def kernel_inception_distance(features1, features2, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
  """KID (clean-fid / torch-fidelity convention): mean and std of the unbiased cubic-kernel MMD^2 over
  `num_subsets` subsets of m = min(subset_size, N1, N2) features drawn without replacement from each set."""
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"KID needs two feature arrays [N, D] of equal D, got {x.shape} and {y.shape}.")
  m = min(subset_size, x.shape[0], y.shape[0])
  if m < 2:
    raise ValueError(f"KID needs at least 2 features per set, got {x.shape[0]} and {y.shape[0]}.")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}.")
  rng = np.random.default_rng(seed)
  values = np.array([
      _polynomial_mmd(x[rng.choice(x.shape[0], m, replace=False)], y[rng.choice(y.shape[0], m, replace=False)])
      for _ in range(num_subsets)])
  return float(values.mean()), float(values.std())


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _inception_score_from_log_probs(log_p: np.ndarray, num_splits: int) -> tuple[float, float]:
  n = log_p.shape[0]
  if num_splits < 1 or n < num_splits:
    raise ValueError(f"Inception Score with {num_splits} splits needs at least that many images, got {n}.")
  scores = []
  for i in range(num_splits):
    part = log_p[i * n // num_splits:(i + 1) * n // num_splits]
    p = np.exp(part)
    with np.errstate(divide="ignore", invalid="ignore"):  # classes with p = 0 contribute 0
      log_marginal = np.log(p.mean(axis=0))
      kl = np.sum(np.where(p > 0, p * (part - log_marginal), 0.0), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits, num_splits: int = 10) -> tuple[float, float]:
  """IS mean and std over `num_splits` consecutive splits, from logits [N, C] (softmax taken here)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or not np.all(np.isfinite(logits)):
    raise ValueError(f"Expected finite logits [N, C], got shape {logits.shape}.")
  return _inception_score_from_log_probs(_log_softmax(logits), num_splits)


def inception_score_from_probs(probs, num_splits: int = 10) -> tuple[float, float]:
  """IS from class probabilities [N, C] (rows sum to 1; zeros allowed)."""
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2 or np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
    raise ValueError("Expected probabilities [N, C] with non-negative rows summing to 1.")
  with np.errstate(divide="ignore"):
    log_p = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), -np.inf)
  return _inception_score_from_log_probs(log_p, num_splits)


# --------------------------------------------------------------------------------------------------------------
# Statistics files.


@dataclasses.dataclass
class FeatureStats:
  """Mean [D] and covariance [D, D] of N feature vectors; optionally the features [N, D] themselves (for KID)."""
  mu: np.ndarray
  sigma: np.ndarray
  num_images: int
  features: np.ndarray | None = None
  weights: str = ""  # which Inception weights produced the features

  @classmethod
  def from_features(cls, features, keep_features: bool = False, weights: str = "") -> "FeatureStats":
    features = np.asarray(features)
    acc = StreamingStats(features.shape[-1]).update(features)
    return cls(acc.mean, acc.covariance(), acc.count, features if keep_features else None, weights)

  @classmethod
  def from_accumulator(cls, acc: StreamingStats, weights: str = "") -> "FeatureStats":
    return cls(acc.mean, acc.covariance(), acc.count, None, weights)


def save_stats(path, stats: FeatureStats) -> None:
  """Writes an .npz with 'mu', 'sigma', 'num_images', 'weights' and (if present) 'features'."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {"mu": np.asarray(stats.mu, np.float64), "sigma": np.asarray(stats.sigma, np.float64),
            "num_images": np.int64(stats.num_images), "weights": np.str_(stats.weights)}
  if stats.features is not None:
    arrays["features"] = np.asarray(stats.features, np.float32)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  tmp = path.with_name(path.name + ".tmp.npz")  # readers never see a half-written file
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(path)


def load_stats(path) -> FeatureStats:
  """Reads `save_stats` files and pytorch-fid / TTUR stats files (keys 'mu', 'sigma')."""
  with np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False) as data:
    if "mu" not in data.files or "sigma" not in data.files:
      raise ValueError(f"{path} is not a statistics file: it needs 'mu' and 'sigma' arrays, has {data.files}.")
    features = data["features"] if "features" in data.files else None
    num = int(data["num_images"]) if "num_images" in data.files else (
        features.shape[0] if features is not None else 0)
    weights = str(data["weights"]) if "weights" in data.files else ""
    mu, sigma = _check_stats(data["mu"], data["sigma"], str(path))
  return FeatureStats(mu, sigma, num, features, weights)


def real_stats_path(cache_dir, *, dataset: str, split: str, resolution: int, num_images: int,
                    weights: str = "default_1") -> epath.Path:
  """Cache file of real-image statistics: `<cache_dir>/<dataset>_<split>_<res>px_n<N>_<weights>.npz`."""
  if resolution <= 0 or num_images <= 0:
    raise ValueError(f"resolution and num_images must be positive, got {resolution} and {num_images}.")
  parts = [dataset, split, f"{int(resolution)}px", f"n{int(num_images)}", weights]
  safe = [re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-") or "x" for p in parts]
  return epath.Path(cache_dir) / ("_".join(safe) + ".npz")
