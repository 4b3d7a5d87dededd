"""Traces GAN health on captioned shapes: D logits, losses, gradient norms and what G's images look like.

    python tools/trace_training.py --steps=300                                   # configs/shapes.py as make demo
    python tools/trace_training.py --steps=300 --set loss.sentence_weight=0 --set loss.word_weight=0 \
        --set loss.image_weight=0                                                # hinge only

Every --every steps it prints the mean of the train metrics since the last line (D's real/fake logits, hinge,
G's adversarial and total loss, contrastive losses, gradient norms) and, on one fixed training batch with fixed
noise and training-mode BatchNorm, G's mean pixel value and the fractions of pixel values above 0.98 ("white",
tanh saturated high) and below 0.02, next to the real images' mean. With --term-gradients it also prints, for each
G loss term, the brightness push: mean(dL/dx) / mean(|dL/dx|) over the fake pixels x, negative when gradient
descent on that term makes the images brighter (-1: every pixel pushed brighter).

Trains from scratch in memory (nothing written). Needs the generated dataset (`make demo` creates it in
runs/tfds) or --data-dir.
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from xmc_gan_jax import demo, losses, steps, train
from xmc_gan_jax.data import sources

WHITE, BLACK = 0.98, 0.02
_COLUMNS = (("d_real_logit", "D real"), ("d_fake_logit", "D fake"), ("d_hinge_loss", "hinge"),
            ("g_adv_loss", "G adv"), ("g_loss", "G loss"), ("real_sentence_loss", "sent r"),
            ("fake_sentence_loss", "sent f"), ("fake_word_loss", "word f"), ("image_loss", "image"),
            ("g_grad_norm", "|gG|"), ("d_grad_norm", "|gD|"))


def _diagnostics(trainer, host_batch, n: int, with_push: bool):
  """Returns jitted state -> dict(mean, white, black [, push_<term>]) of G's images on a fixed batch and noise.

  push_<term> = mean(dL/dx) / mean(|dL/dx|) over the fake pixels x for the adversarial term and each enabled
  contrastive term of G's loss, as the train step defines them (steps.contrastive_terms / steps.image_terms):
  one D forward pass in inference mode, one vjp per term.
  """
  modules = trainer.modules
  ids, mask = jnp.asarray(host_batch["token_ids"][:n]), jnp.asarray(host_batch["token_mask"][:n])
  real = steps.to_unit_range(jnp.asarray(host_batch["image"][:n]))
  z = jax.random.normal(jax.random.key(1), (n, modules.z_dim))

  @jax.jit
  def diagnose(state):
    words, sentence = steps.text_features(modules, trainer.text_params, ids, mask)
    fake, _ = steps.generate(modules, state.g_params, state.g_batch_stats, z, sentence, words, mask, train=True)
    result = {"mean": jnp.mean(fake), "white": jnp.mean(fake > WHITE), "black": jnp.mean(fake < BLACK)}
    if not with_push:
      return result

    swapped, swap_valid = steps.swap_negative_sentences(modules, trainer.text_params, ids, mask, jax.random.key(2))

    def terms(images):
      out, _ = steps.discriminate(modules, state.d_params, state.d_sn_stats, jnp.concatenate([real, images]),
                                  jnp.concatenate([sentence, sentence]), train=False, extra_sentences=swapped)
      real_out, fake_out = steps.split_halves(out, n)
      _, fake_metrics = steps.contrastive_terms(modules, "fake", fake_out, words, mask, swap_valid)
      _, image_metrics = steps.image_terms(modules, real_out, fake_out, real, images)
      values = {"adv": losses.hinge_g_loss(fake_out["logits"])}
      values.update({k[:-len("_loss")].removeprefix("fake_"): v
                     for k, v in {**fake_metrics, **image_metrics}.items() if k.endswith("_loss")})
      return values

    values, vjp_fn = jax.vjp(terms, fake)
    for name in values:
      (g,) = vjp_fn({k: jnp.ones_like(v) if k == name else jnp.zeros_like(v) for k, v in values.items()})
      result[f"push_{name}"] = jnp.mean(g) / jnp.maximum(jnp.mean(jnp.abs(g)), 1e-30)
    return result
  return diagnose


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--every", type=int, default=25)
  parser.add_argument("--data-dir", default="runs/tfds")
  parser.add_argument("--res", type=int, default=32, choices=(32, 64))
  parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="Config override (repeatable).")
  parser.add_argument("--term-gradients", action="store_true", help="Also print each G term's brightness push.")
  args = parser.parse_args()
  config = demo.build_config(argparse.Namespace(res=args.res, data_dir=args.data_dir, set=args.set))
  trainer = train.Trainer(config)
  state = trainer.init_state()
  data = sources.train_source(config, trainer.text.vocab_path, trainer.text.vocab_size, 0)
  held = next(data)
  n = min(16, held["image"].shape[0])
  diagnose = _diagnostics(trainer, held, n, args.term_gradients)
  real_mean = float(np.mean(held["image"][:n]) / 255.0)
  header = "step " + " ".join(f"{label:>7s}" for _, label in _COLUMNS) + " | fake mean  white  black (real mean)"
  print(header)
  pending = []
  for step in range(1, args.steps + 1):
    state, metrics = trainer.step(state, next(data))
    pending.append(metrics)
    if step % args.every and step != 1:
      continue
    means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
    pending = []
    d = {k: float(v) for k, v in diagnose(state).items()}
    cells = " ".join(f"{means[key]:7.2f}" if key in means else f"{'-':>7s}" for key, _ in _COLUMNS)
    line = f"{step:4d} {cells} | {d['mean']:9.3f} {d['white']:6.3f} {d['black']:6.3f} ({real_mean:.3f})"
    if args.term_gradients:
      line += " | push " + " ".join(f"{k[5:]} {v:+.2f}" for k, v in d.items() if k.startswith("push_"))
    print(line, flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
