"""FID / KID / IS (and shapes alignment) of the raw and EMA generators of a TrainState: periodic in training and,
through evaluation/follow.py, standalone on checkpoints (`--mode=eval`).

Protocol, identical for every checkpoint so that scores are comparable:
- N caption/image pairs from the eval split (`sources.eval_source`, global batches of eval.batch_size; N =
  eval.num_images, or eval.standalone_num_images for `--mode=eval`). Repeat r uses the captions of seed offset r
  and noise z ~ N(0, 1) drawn on the host for the global batch from (config.seed, r, batch index) (`eval_noise`;
  each process takes the rows it feeds). The raw and the EMA generator see the same captions and the same z.
  Features of all processes are gathered and put in global row order (batch by batch) before padding rows
  (`valid` = 0) are dropped and the first N kept, so with random data a run on P processes scores the same
  images as a run on one.
- Generated images in [0, 1] are quantised to uint8 (floor(255 x + 0.5), as a saved PNG) before the FID
  Inception (pytorch-fid semantics, `features.FeatureExtractor`) and before the shapes verifier.
- Real statistics: pool3 mean and covariance of the first N eval-split images at the model resolution, plus the
  first `KID_MAX_REAL_FEATURES` features for KID, cached in `fid_stats.real_stats_path(eval.stats_dir or
  ~/.cache/xmc_gan_jax/stats, ...)`.
- Metrics per generator (EMA keys carry the prefix `ema_`): `fid` (float64; for N <= 2048 by the exact Gram
  route `frechet_distance_of_features`, seconds instead of minutes on a CPU host); `kid` (unbiased cubic-kernel
  MMD^2, mean over 100 subsets of <= 1000); `is` only with Inception weights that have the logits layer
  (pytorch-fid's .pth); and for batches with shapes objects (`objects/*`, `num_objects`) the verifier's
  `align_*` fractions.
"""
import os
import pathlib
import time
from typing import Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from xmc_gan_jax import image_grid
from xmc_gan_jax import sharding
from xmc_gan_jax.data import shapes_verifier
from xmc_gan_jax.data import sources
from xmc_gan_jax.evaluation import features as features_lib
from xmc_gan_jax.evaluation import fid_stats

KID_MAX_REAL_FEATURES = 10_000  # real features kept in the stats cache for KID (float32, 8 KiB each)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
GRID_IMAGES = 8
_NOISE_SALT = 0x65766131  # keeps evaluation noise apart from every training random stream
_STD_METRICS = ("fid", "kid", "is")
_OBJECT_KEYS = tuple(f"objects/{k}" for k in ("color", "shape", "size", "row", "col")) + ("num_objects",)


def eval_noise(seed: int, repeat: int, batch_index: int, batch_size: int, z_dim: int,
               process_index: int = 0) -> np.ndarray:
  """float32 [batch_size, z_dim] standard normal noise of one eval batch; a pure function of its arguments.

  The evaluator draws the GLOBAL batch (process_index 0) and each process keeps its rows; `process_index` > 0
  gives another stream (kept for callers that salt by process)."""
  rng = np.random.default_rng([_NOISE_SALT, int(seed), int(repeat), int(process_index), int(batch_index)])
  return rng.standard_normal((batch_size, z_dim), dtype=np.float32)


def quantize(images: np.ndarray) -> np.ndarray:
  """float [..., 3] in [0, 1] -> uint8 levels floor(255 x + 0.5) after clipping (= features.quantize_unit_float)."""
  return np.floor(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)
                  ).astype(np.uint8)


def default_stats_dir() -> pathlib.Path:
  return pathlib.Path(os.path.expanduser("~")) / ".cache" / "xmc_gan_jax" / "stats"


def weights_tag_for(weights_path: str) -> str:
  """Short name of the Inception weights in cache file names: "default_1" or the file's stem."""
  return pathlib.Path(weights_path).stem if weights_path else "default_1"


def frechet_distance_of_features(x: np.ndarray, y: np.ndarray) -> float:
  """FID between the Gaussians fitted (ddof = 1) to features x [n1, D] and y [n2, D], in float64, via the Gram
  route: tr (S1 S2)^(1/2) = sum of singular values of Xc Yc^T / sqrt((n1 - 1)(n2 - 1)) with Xc, Yc the centred
  features (the nonzero eigenvalues of S1 S2 are those of (Xc Yc^T)(Yc Xc^T) / ((n1 - 1)(n2 - 1))). Equal to
  `fid_stats.frechet_distance` of their statistics, but costs O(n1 n2 D) instead of two D x D eigh: the fast route
  for periodic evaluation, where N (256 by default) is far below D = 2048."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
    raise ValueError(f"Need two feature arrays [N >= 2, D] of equal D, got {x.shape} and {y.shape}.")
  xc, yc = x - x.mean(0), y - y.mean(0)
  c1, c2 = x.shape[0] - 1, y.shape[0] - 1
  mean_term = float(np.sum((x.mean(0) - y.mean(0)) ** 2))
  trace_term = float(np.sum(xc * xc) / c1 + np.sum(yc * yc) / c2)
  cross = float(np.sum(np.linalg.svd(xc @ yc.T, compute_uv=False))) / np.sqrt(c1 * c2)
  return float(max(mean_term + trace_term - 2.0 * cross, 0.0))


def _local_rows(batch_sharding, global_size: int) -> np.ndarray:
  """Global row indices this process supplied to `make_array_from_process_local_data`, in its order."""
  spans = sorted({(s[0].start or 0, global_size if s[0].stop is None else s[0].stop)
                  for s in batch_sharding.addressable_devices_indices_map((global_size,)).values()})
  return np.concatenate([np.arange(a, b) for a, b in spans])


def _gather_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Concatenates equally shaped per-process arrays [n, ...] in process order (identity on one process)."""
  if jax.process_count() == 1:
    return arrays
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in arrays.items()}


def _all_processes_agree(flag: bool) -> bool:
  """Whether `flag` holds on every process (a collective on several processes: all must call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.asarray(multihost_utils.process_allgather(np.array([int(bool(flag))], np.int32))).all())


def _captions(batch: dict[str, np.ndarray], rows: np.ndarray) -> list[str]:
  if "caption" not in batch:
    return [""] * len(rows)
  return [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in batch["caption"][rows]]


class Evaluator:
  """Scores a TrainState's raw and EMA generators against cached real statistics (see the module doc).

  `runtime` (a `runtime.Runtime` built from `config`, or anything with its `.samples(params, batch_stats,
  token_ids, token_mask, z)` (images [B, H, W, 3] in [0, 1]), `.mesh` and `.text` (vocab_path, vocab_size)) is
  the sampler; the evaluator never trains.
  `extractor` defaults to the FID Inception with config.eval.inception_weights ("" = default_1.pt).
  """

  def __init__(self, config: ml_collections.ConfigDict, runtime, *, num_images: int | None = None,
               extractor: features_lib.FeatureExtractor | None = None, weights_tag: str | None = None,
               include_raw: bool = True):
    self.config = config
    self.include_raw = include_raw  # False: score the EMA generator only (half the Inception passes)
    self.runtime = runtime
    self.num_images = int(num_images or config.eval.num_images)
    self.batch_size = int(config.eval.batch_size)
    shards = sharding.batch_devices(runtime.mesh)
    if self.num_images < 2:
      raise ValueError(f"eval.num_images must be >= 2 (FID needs a covariance), got {self.num_images}.")
    if self.batch_size < 1 or self.batch_size % shards or self.batch_size % jax.process_count():
      raise ValueError(f"eval.batch_size={self.batch_size} must be a positive multiple of the {shards} devices "
                       f"of the mesh's batch axes (e.g. --config.eval.batch_size={shards * 4}).")
    weights = str(config.eval.inception_weights or "")
    if extractor is None:
      extractor = features_lib.FeatureExtractor(weights_path=weights or None,
                                                batch_size=self.batch_size // jax.process_count())
    self.extractor = extractor
    self.weights_tag = weights_tag or weights_tag_for(weights)
    self._batch_sharding = sharding.batch_sharding(runtime.mesh)
    self._real: fid_stats.FeatureStats | None = None
    self.last_grid: tuple[np.ndarray, np.ndarray, list[str]] | None = None  # (ema uint8, raw uint8, captions)
    self.last_num_images = 0

  # ---- data ---------------------------------------------------------------------------------------------------

  def _batches(self, repeat: int) -> Iterator[dict[str, np.ndarray]]:
    return sources.eval_source(self.config, self.runtime.text.vocab_path, self.runtime.text.vocab_size,
                               num_examples=self.num_images, batch_size=self.batch_size, seed_offset=repeat)

  def stats_path(self):
    """Cache file of the real statistics (dataset, split, resolution, N, weights; seed for random data)."""
    cfg = self.config
    dataset = str(cfg.dataset.name)
    if dataset == "random":
      dataset += f"-seed{int(cfg.seed)}"
    if cfg.dataset.get("center_crop", False):
      dataset += "-crop"
    if jax.process_count() > 1 and cfg.dataset.name != "random":  # random eval batches ignore the process count
      dataset += f"-p{jax.process_count()}"
    return fid_stats.real_stats_path(cfg.eval.stats_dir or default_stats_dir(), dataset=dataset,
                                     split=str(cfg.dataset.eval_split), resolution=int(cfg.model.image_size),
                                     num_images=self.num_images, weights=self.weights_tag)

  def real_stats(self) -> fid_stats.FeatureStats:
    """Real-image statistics (with features for KID), from the cache or computed once and cached."""
    if self._real is not None:
      return self._real
    path = self.stats_path()
    cached = None
    if path.is_file():
      try:
        stats = fid_stats.load_stats(path)
        if stats.features is not None and stats.features.shape[0] >= 2 and stats.weights == self.weights_tag:
          cached = stats
        else:
          logging.warning("Ignoring %s: no features or other weights (%r); recomputing.", path, stats.weights)
      except (OSError, ValueError) as e:
        logging.warning("Ignoring unreadable real statistics %s (%s); recomputing.", path, e)
    # Computing gathers features from every process: all of them compute unless every one has the cache (hosts
    # without a shared stats_dir would otherwise wait forever in the gather of the ones that compute).
    if _all_processes_agree(cached is not None):
      self._real = cached
      logging.info("Real statistics of %d images from %s", cached.num_images, path)
      return cached
    pool3, valid, rows = [], [], []
    for index, batch in enumerate(self._batches(repeat=0)):
      n = len(batch["image"])
      pool3.append(self.extractor(batch["image"]).pool3)
      valid.append(np.asarray(batch.get("valid", np.ones(n, np.int32)), np.int32))
      rows.append(self._global_rows(index, n))
    feats = self._select({"pool3": np.concatenate(pool3)}, np.concatenate(valid), np.concatenate(rows))["pool3"]
    stats = fid_stats.FeatureStats.from_features(feats, weights=self.weights_tag)
    stats.features = feats[:KID_MAX_REAL_FEATURES]
    if jax.process_index() == 0:
      fid_stats.save_stats(path, stats)
      logging.info("Saved real statistics of %d images to %s", stats.num_images, path)
    self._real = stats
    return stats

  def _global_rows(self, batch_index: int, local_size: int) -> np.ndarray:
    """Positions in the whole evaluation (batch by batch) of this process's `local_size` rows of batch
    `batch_index`, in the order `sharding.to_global_batch` places them."""
    global_size = local_size * jax.process_count()
    return batch_index * global_size + _local_rows(self._batch_sharding, global_size)

  def _select(self, arrays: dict[str, np.ndarray], valid: np.ndarray,
              rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Gathers rows from all processes, puts them in global order (`rows`: each local row's global position),
    drops padding rows and keeps the first num_images."""
    extra = {"_valid": valid} if rows is None else {"_valid": valid, "_row": np.asarray(rows, np.int64)}
    gathered = _gather_rows(dict(arrays, **extra))
    if rows is not None:
      order = np.argsort(gathered.pop("_row"), kind="stable")
      gathered = {k: v[order] for k, v in gathered.items()}
    keep = np.flatnonzero(gathered.pop("_valid") > 0)[:self.num_images]
    if keep.size < self.num_images:
      logging.warning("Evaluation used %d images, fewer than the %d asked for.", keep.size, self.num_images)
    return {k: v[keep] for k, v in gathered.items()}

  # ---- generation and scoring -----------------------------------------------------------------------------------

  def _generate(self, params, batch_stats, batch: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """This process's rows of G(z, caption) as uint8 [b, H, W, 3]."""
    arrays = sharding.to_global_batch({"token_ids": batch["token_ids"], "token_mask": batch["token_mask"],
                                       "z": z}, self.runtime.mesh)
    images = self.runtime.samples(params, batch_stats, arrays["token_ids"], arrays["token_mask"], arrays["z"])
    return quantize(np.asarray(images)[_local_rows(self._batch_sharding, images.shape[0])])

  def score(self, state, repeat: int = 0) -> dict[str, float]:
    """Metrics of `state.g_params` (keys fid, kid, ...) and `state.ema_params` (ema_fid, ...) for one repeat."""
    real = self.real_stats()
    generators = {"": state.g_params, "ema_": state.ema_params} if self.include_raw else {"ema_": state.ema_params}
    parts: dict[str, list[np.ndarray]] = {}
    add = lambda key, value: parts.setdefault(key, []).append(value)
    self.last_grid = None
    z_dim, seed = int(self.config.model.z_dim), int(self.config.seed)
    for index, batch in enumerate(self._batches(repeat)):
      n = batch["token_ids"].shape[0]
      valid = np.asarray(batch.get("valid", np.ones(n, np.int32)), np.int32)
      rows = np.flatnonzero(valid > 0)
      add("valid", valid)
      global_rows = self._global_rows(index, n)
      add("rows", global_rows)
      is_shapes = all(k in batch for k in _OBJECT_KEYS)
      if is_shapes:
        add("num_objects", np.where(valid > 0, batch["num_objects"], 0).astype(np.int32))
      # The global batch's noise, this process's rows of it (the same z per example on any process count).
      global_size = n * jax.process_count()
      z = eval_noise(seed, repeat, index, global_size, z_dim)[global_rows - index * global_size]
      images = {}
      for prefix, params in generators.items():
        images[prefix] = self._generate(params, state.g_batch_stats, batch, z)
        feats = self.extractor(images[prefix])
        add(prefix + "pool3", feats.pool3)
        if feats.logits is not None:
          add(prefix + "logits", feats.logits)
        if is_shapes:
          judged = shapes_verifier.score_images(images[prefix][rows], {k: batch[k][rows] for k in _OBJECT_KEYS})
          for key, ok in judged.items():
            full = np.zeros(n, np.int32)
            full[rows] = ok
            add(f"{prefix}judged/{key}", full)
      if self.last_grid is None and rows.size:
        shown = rows[:GRID_IMAGES]
        raw = images[""][shown] if "" in images else images["ema_"][shown]
        self.last_grid = (images["ema_"][shown], raw, _captions(batch, shown))
    merged = {k: np.concatenate(v) for k, v in parts.items() if k not in ("valid", "rows")}
    selected = self._select(merged, np.concatenate(parts["valid"]), np.concatenate(parts["rows"]))
    self.last_num_images = int(selected[list(generators)[-1] + "pool3"].shape[0])
    scores: dict[str, float] = {}
    for prefix in generators:
      pool3 = selected[prefix + "pool3"]
      scores[prefix + "fid"] = self._fid(pool3, real)
      scores[prefix + "kid"] = fid_stats.kernel_inception_distance(pool3, real.features, KID_SUBSETS,
                                                                   KID_SUBSET_SIZE, seed=repeat)[0]
      if prefix + "logits" in selected:
        logits = selected[prefix + "logits"]
        scores[prefix + "is"] = fid_stats.inception_score(logits, min(IS_SPLITS, logits.shape[0]))[0]
      judged = {k.split("/", 1)[1]: v.astype(bool) for k, v in selected.items() if k.startswith(prefix + "judged/")}
      if judged:
        summary = shapes_verifier.summarize(judged, selected["num_objects"])
        scores.update({prefix + k: v for k, v in summary.items()})
    return scores

  @staticmethod
  def _fid(pool3: np.ndarray, real: fid_stats.FeatureStats) -> float:
    """FID against the real statistics; the Gram route when both feature sets are complete and N <= D."""
    complete = real.features is not None and real.features.shape[0] == real.num_images
    if complete and max(pool3.shape[0], real.num_images) <= pool3.shape[1]:
      return frechet_distance_of_features(pool3, real.features)
    gen = fid_stats.FeatureStats.from_features(pool3)
    return fid_stats.frechet_distance(gen.mu, gen.sigma, real.mu, real.sigma)

  def score_repeats(self, state, repeats: int) -> dict[str, float]:
    """Mean over `repeats` of `score` (repeat r = caption offset r, noise stream r); `fid_std`, `kid_std`,
    `is_std` (and ema_) = population std over repeats; plus `num_images` and `repeats`."""
    if repeats < 1:
      raise ValueError(f"eval.repeats must be >= 1, got {repeats}.")
    runs = [self.score(state, repeat=r) for r in range(repeats)]
    out = {k: float(np.mean([run[k] for run in runs])) for k in runs[0]}
    for prefix in ("", "ema_"):
      for name in _STD_METRICS:
        if prefix + name in out:
          out[f"{prefix}{name}_std"] = float(np.std([run[prefix + name] for run in runs]))
    out["num_images"] = float(self.last_num_images)
    out["repeats"] = float(repeats)
    return out

  def evaluate(self, state, step: int, writer) -> dict[str, float]:
    """Periodic evaluation in training: `eval/*` scalars, captioned EMA and raw sample grids, captions text."""
    start = time.time()
    scores = self.score(state, repeat=0)
    scalars = {f"eval/{k}": v for k, v in scores.items()}
    scalars["eval/seconds"] = time.time() - start
    writer.write_scalars(step, scalars)
    if self.last_grid is not None:
      ema, raw, captions = self.last_grid
      writer.write_images(step, {"eval/ema_samples": image_grid.captioned_grid(ema, captions)[None],
                                 "eval/samples": image_grid.captioned_grid(raw, captions)[None]})
      if any(captions):
        writer.write_texts(step, {"eval/captions": "\n\n".join(f"{i}: {c}" for i, c in enumerate(captions))})
    writer.flush()
    logging.info("Evaluation at step %d on %d images (%.1f s): %s", step, self.last_num_images,
                 scalars["eval/seconds"], {k: round(v, 4) for k, v in scores.items()})
    return scores
