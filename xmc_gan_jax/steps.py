"""Pure train and sample steps (no jit, no sharding here: the trainer applies them).

One train step consumes a batch shaped [k, n, ...] (k = d_steps_per_g_step sub-batches of n examples):
sub-batches 0..k-2 each update D only; the last one runs a single forward pass of G and D and takes D's gradient
of L_D and G's gradient of L_G from it through two vjp cotangents, as the original `train_g_d`:
  L_D = hinge_D + real sentence-image + real word-region            (updates D only)
  L_G = -D(fake) + fake sentence-image + fake word-region + image-image(D features) [+ pretrained features]
The EMA of G follows each G update. A step whose losses or gradients are not finite leaves the
state unchanged (except `step`) and reports `nonfinite = 1`, so the trainer can stop with the last good state
intact.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from xmc_gan_jax import losses
from xmc_gan_jax.model_factory import GANModules
from xmc_gan_jax.models.text_encoder import encode_text
from xmc_gan_jax.train_state import TrainState

Metrics = dict[str, jax.Array]


def text_features(modules: GANModules, text_params, token_ids, token_mask):
  """Frozen encoder: words [B,T,E] (padded rows zero), sentence [B,E], both float32."""
  return encode_text(modules.text_module, text_params, token_ids, token_mask, modules.pooling)


def to_unit_range(image_uint8: jax.Array) -> jax.Array:
  """uint8 [B,H,W,3] -> float32 in [0,1] (on device: the host sends 4x fewer bytes)."""
  return image_uint8.astype(jnp.float32) / 255.0


def generate(modules: GANModules, g_params, g_batch_stats, z, sentence, words, mask, train: bool):
  """G forward. Returns (images [B,H,W,3] in [0,1], updated batch_stats (unchanged when not training))."""
  variables = {"params": g_params, "batch_stats": g_batch_stats}
  if not train:
    return modules.generator.apply(variables, z, sentence, words, mask, train=False), g_batch_stats
  images, updates = modules.generator.apply(variables, z, sentence, words, mask, train=True,
                                            mutable=["batch_stats"])
  return images, updates["batch_stats"]


def discriminate(modules: GANModules, d_params, d_sn_stats, images, sentence, train: bool):
  """D forward on [N,H,W,3]. Returns (outputs, updated spectral-norm stats (unchanged when not training))."""
  variables = {"params": d_params, "spectral_norm_stats": d_sn_stats}
  if not train:
    return modules.discriminator.apply(variables, images, sentence, train=False), d_sn_stats
  out, updates = modules.discriminator.apply(variables, images, sentence, train=True,
                                             mutable=["spectral_norm_stats"])
  return out, updates["spectral_norm_stats"]


def split_halves(out: dict[str, jax.Array], n: int):
  """D outputs on concat([real, fake]) -> (real outputs, fake outputs), the first n rows being real."""
  return jax.tree.map(lambda x: x[:n], out), jax.tree.map(lambda x: x[n:], out)


def contrastive_terms(modules: GANModules, side: str, out, words, mask) -> tuple[jax.Array, Metrics]:
  """Sentence-image and word-region losses of one side ('real' or 'fake') of D's outputs.

  Returns (weighted sum, metrics); metrics hold each enabled term's unweighted `{side}_{term}_loss`, accuracy and
  entropy. Terms with weight 0 are not computed.
  """
  cfg = modules.loss
  total = jnp.zeros((), jnp.float32)
  metrics: Metrics = {}
  if cfg.sentence_weight:
    loss, m = losses.contrastive_loss(out["features"], out["sentence_features"], cfg.temperature,
                                      cfg.contrastive_group_size)
    total += cfg.sentence_weight * loss
    metrics.update({f"{side}_sentence_loss": loss, f"{side}_sentence_accuracy": m["accuracy"],
                    f"{side}_sentence_entropy": m["entropy"]})
  if cfg.word_weight:
    loss, m = losses.word_region_loss(words, mask, out["regions"], cfg.gamma1, cfg.gamma2, cfg.gamma3,
                                      cfg.contrastive_group_size)
    total += cfg.word_weight * loss
    metrics.update({f"{side}_word_loss": loss, f"{side}_word_accuracy": m["accuracy"],
                    f"{side}_word_entropy": m["entropy"]})
  return total, metrics


def image_terms(modules: GANModules, real_out, fake_out, real_images, fake_images) -> tuple[jax.Array, Metrics]:
  """Image-image contrastive losses (G side only): on D features, and on pretrained features when present.

  Returns (weighted sum, metrics) with each enabled term's unweighted `image_loss` / `pretrained_image_loss`.
  """
  cfg = modules.loss
  total = jnp.zeros((), jnp.float32)
  metrics: Metrics = {}
  if cfg.image_weight:
    loss, m = losses.contrastive_loss(fake_out["features"], real_out["features"], cfg.temperature,
                                      cfg.contrastive_group_size)
    total += cfg.image_weight * loss
    metrics.update({"image_loss": loss, "image_accuracy": m["accuracy"], "image_entropy": m["entropy"]})
  if cfg.pretrained_image_weight and modules.pretrained_features is not None:
    fake_f = modules.pretrained_features(fake_images)
    real_f = jax.lax.stop_gradient(modules.pretrained_features(real_images))
    loss, m = losses.contrastive_loss(fake_f, real_f, cfg.temperature, cfg.contrastive_group_size)
    total += cfg.pretrained_image_weight * loss
    metrics.update({"pretrained_image_loss": loss, "pretrained_image_accuracy": m["accuracy"]})
  return total, metrics


def _d_loss(modules, real_out, fake_out, words, mask) -> tuple[jax.Array, Metrics]:
  hinge = losses.hinge_d_loss(real_out["logits"], fake_out["logits"])
  contrastive, metrics = contrastive_terms(modules, "real", real_out, words, mask)
  metrics.update({"d_hinge_loss": hinge, "d_real_logit": jnp.mean(real_out["logits"]),
                  "d_fake_logit": jnp.mean(fake_out["logits"])})
  return hinge + contrastive, metrics


def _finite(*trees) -> jax.Array:
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _z(modules: GANModules, rng, n: int) -> jax.Array:
  return jax.random.normal(rng, (n, modules.z_dim), jnp.float32)


def d_update(modules: GANModules, state: TrainState, text_params, batch, rng) -> tuple[TrainState, Metrics]:
  """One D-only update on a sub-batch (G in training mode; its BatchNorm updates are discarded)."""
  real = to_unit_range(batch["image"])
  n = real.shape[0]
  words, sentence = text_features(modules, text_params, batch["token_ids"], batch["token_mask"])
  fake, _ = generate(modules, state.g_params, state.g_batch_stats, _z(modules, rng, n), sentence, words,
                     batch["token_mask"], train=True)
  fake = jax.lax.stop_gradient(fake)

  def loss_fn(d_params):
    out, sn = discriminate(modules, d_params, state.d_sn_stats, jnp.concatenate([real, fake]),
                           jnp.concatenate([sentence, sentence]), train=True)
    real_out, fake_out = split_halves(out, n)
    loss, metrics = _d_loss(modules, real_out, fake_out, words, batch["token_mask"])
    return loss, (sn, metrics)

  (d_loss, (sn, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
  updates, d_opt_state = modules.d_tx.update(grads, state.d_opt_state, state.d_params)
  new = state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt_state=d_opt_state,
                      d_sn_stats=sn)
  finite = _finite(d_loss, grads)
  new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
  metrics.update({"d_loss": d_loss, "d_grad_norm": optax.tree.norm(grads),
                  "nonfinite": jnp.logical_not(finite).astype(jnp.float32)})
  return new, metrics


def g_d_update(modules: GANModules, state: TrainState, text_params, batch, rng) -> tuple[TrainState, Metrics]:
  """Simultaneous D and G updates from one forward pass; then the EMA of G."""
  real = to_unit_range(batch["image"])
  n = real.shape[0]
  mask = batch["token_mask"]
  words, sentence = text_features(modules, text_params, batch["token_ids"], mask)
  z = _z(modules, rng, n)

  def forward(g_params, d_params):
    fake, g_stats = generate(modules, g_params, state.g_batch_stats, z, sentence, words, mask, train=True)
    out, sn = discriminate(modules, d_params, state.d_sn_stats, jnp.concatenate([real, fake]),
                           jnp.concatenate([sentence, sentence]), train=True)
    real_out, fake_out = split_halves(out, n)
    d_loss, metrics = _d_loss(modules, real_out, fake_out, words, mask)
    g_adv = losses.hinge_g_loss(fake_out["logits"])
    fake_terms, fake_metrics = contrastive_terms(modules, "fake", fake_out, words, mask)
    image_total, image_metrics = image_terms(modules, real_out, fake_out, real, fake)
    g_loss = g_adv + fake_terms + image_total
    metrics.update(fake_metrics)
    metrics.update(image_metrics)
    metrics["g_adv_loss"] = g_adv
    return (d_loss, g_loss), (g_stats, sn, metrics)

  (d_loss, g_loss), vjp_fn, (g_stats, sn, metrics) = jax.vjp(
      forward, state.g_params, state.d_params, has_aux=True)
  one, zero = jnp.ones_like(d_loss), jnp.zeros_like(g_loss)
  _, d_grads = vjp_fn((one, zero))
  g_grads, _ = vjp_fn((zero, one))

  d_updates, d_opt_state = modules.d_tx.update(d_grads, state.d_opt_state, state.d_params)
  g_updates, g_opt_state = modules.g_tx.update(g_grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  decay = modules.ema_decay
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, g_params)
  new = state.replace(
      g_params=g_params, g_batch_stats=g_stats, g_opt_state=g_opt_state, ema_params=ema,
      d_params=optax.apply_updates(state.d_params, d_updates), d_opt_state=d_opt_state, d_sn_stats=sn)
  finite = _finite(d_loss, g_loss, d_grads, g_grads)
  new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
  metrics.update({
      "d_loss": d_loss, "g_loss": g_loss, "nonfinite": jnp.logical_not(finite).astype(jnp.float32),
      "d_grad_norm": optax.tree.norm(d_grads), "g_grad_norm": optax.tree.norm(g_grads),
      "g_param_norm": optax.tree.norm(g_params), "d_param_norm": optax.tree.norm(new.d_params),
  })
  return new, metrics


def train_step(modules: GANModules, state: TrainState, text_params, batch, rng) -> tuple[TrainState, Metrics]:
  """A full train step on `batch` shaped [k, n, ...]. Noise comes from fold_in(rng, step) (resumable)."""
  step_rng = jax.random.fold_in(rng, state.step)
  k = batch["image"].shape[0]
  d_metrics = []
  for i in range(k - 1):
    sub = jax.tree.map(lambda x: x[i], batch)
    state, m = d_update(modules, state, text_params, sub, jax.random.fold_in(step_rng, i))
    d_metrics.append(m)
  last = jax.tree.map(lambda x: x[k - 1], batch)
  state, metrics = g_d_update(modules, state, text_params, last, jax.random.fold_in(step_rng, k - 1))
  all_d = [m["d_loss"] for m in d_metrics] + [metrics["d_loss"]]
  metrics["d_loss"] = jnp.mean(jnp.stack(all_d))
  metrics["nonfinite"] = jnp.max(jnp.stack([m["nonfinite"] for m in d_metrics] + [metrics["nonfinite"]]))
  metrics = {k_: v.astype(jnp.float32) for k_, v in metrics.items()}
  return state.replace(step=state.step + 1), metrics


def sample(modules: GANModules, g_params, g_batch_stats, text_params, token_ids, token_mask, z) -> jax.Array:
  """Images [B,H,W,3] in [0,1] from captions (inference-mode BatchNorm). Pass EMA params for EMA samples."""
  words, sentence = text_features(modules, text_params, token_ids, token_mask)
  images, _ = generate(modules, g_params, g_batch_stats, z, sentence, words, token_mask, train=False)
  return images


def split_batch(batch: dict[str, Any], k: int) -> dict[str, Any]:
  """Host-side: [k*n, ...] -> [k, n, ...] so each sub-batch stays evenly sharded on the example axis."""
  return {key: v.reshape((k, v.shape[0] // k) + v.shape[1:]) for key, v in batch.items()}
