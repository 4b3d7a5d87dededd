"""Caption alignment of a shapes generator: the verifier's accuracies of the EMA generator on held-out captions.

Used by `make demo` after training and by tools/alignment_curve.py per checkpoint. Captions are the first
`num_images` of the validation split, noise is `evaluator.eval_noise` (seed, repeat 0), images are quantised to
uint8 as a saved PNG before the verifier judges them.
"""
import numpy as np

from xmc_gan_jax.data import shapes_verifier
from xmc_gan_jax.data import sources
from xmc_gan_jax.evaluation import evaluator as evaluator_lib

GRID_IMAGES = 16  # images of the returned sample grid


def shapes_alignment(runtime, state, config, num_images: int,
                     batches=None) -> tuple[dict[str, float], tuple[np.ndarray, list[str]]]:
  """(metrics, (grid images uint8 [<=16, H, W, 3], their captions)) of `state`'s EMA generator.

  metrics: `ema_align_{color_position,size,shape,no_extra,all}` and per object count `..._{1,2,3}obj` (fractions
  in [0, 1]; see shapes_verifier.summarize). `runtime` provides `.samples` and `.text` (a runtime.Runtime);
  `batches` replaces the validation split's pipeline (host batches with token_ids, token_mask, caption,
  num_objects and objects/*).
  """
  judged, counts, grid = {}, [], None
  if batches is None:
    batches = sources.eval_source(config, runtime.text.vocab_path, runtime.text.vocab_size,
                                  num_examples=num_images, batch_size=config.eval.batch_size)
  for index, batch in enumerate(batches):
    n = batch["token_ids"].shape[0]
    z = evaluator_lib.eval_noise(config.seed, 0, index, n, config.model.z_dim)
    images = evaluator_lib.quantize(runtime.samples(state.ema_params, state.g_batch_stats, batch["token_ids"],
                                                    batch["token_mask"], z))
    rows = np.flatnonzero(batch.get("valid", np.ones(n)) > 0)
    objects = {k: v[rows] for k, v in batch.items() if k.startswith("objects/") or k == "num_objects"}
    for key, ok in shapes_verifier.score_images(images[rows], objects).items():
      judged.setdefault(key, []).append(ok)
    counts.append(objects["num_objects"])
    if grid is None:
      shown = rows[:GRID_IMAGES]
      grid = (images[shown], [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                              for c in batch["caption"][shown]])
  summary = shapes_verifier.summarize({k: np.concatenate(v) for k, v in judged.items()}, np.concatenate(counts))
  return {f"ema_{k}": float(v) for k, v in summary.items()}, grid
