"""Captioned shapes: the embedded default job, which trains on a laptop CPU with no download.

    python -m xmc_gan_jax.main --config=configs/shapes.py --workdir=runs/shapes
    python -m xmc_gan_jax.main --config=configs/shapes.py:res=64 --workdir=runs/shapes64     # 64 px variant

Data: the TFDS builder `captioned_shapes/32px` (or `/64px`) from xmc_gan_jax/data/shapes_builder.py. It generates
20,000 train and 2,000 validation images locally the first time (about 25 s at 32 px, 45 s at 64 px on 2 CPU
cores) into the TFDS data_dir. Each image shows 1-3 coloured circles, squares or triangles, small or large, on
a 3x3 grid. Its 5 captions describe every object, e.g. "a small red circle in the top left with a big blue
square directly below it". The shapes verifier (xmc_gan_jax/data/shapes_verifier.py) checks whether generated
images show what their captions say, so alignment is measured exactly: `align_all` is 1.0 on real images and
about 0 on noise.

The default is 32 px: one upsampling block fewer than 64 px, and a grid cell is still ~11 px, enough to tell
sizes and shapes apart.
"""
from configs import arg_parsing
from configs import common


def get_config(arg=None):
  args = arg_parsing.parse_config_arg(arg, {"res": 32})
  if args["res"] not in (32, 64):
    raise ValueError(f"shapes.py supports res=32 or res=64 (the captioned_shapes configs), got {args['res']}.")
  config = common.get_base_config()
  config.batch_size = 16
  config.total_steps = 5000
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 500
  config.num_sample_images = 16

  config.model.image_size = args["res"]
  # Widths 16 (G: 256, 128 | 16 channels; D: 32, 64, 128): 2x the steps/s of 32 on 2 CPU cores.
  config.model.gf_dim = 16
  config.model.df_dim = 16
  config.model.cond_size = 16
  # Untrained G's pixels centre on 0.78 (the grey background is 200/255; the data's mean pixel is 0.76) instead of
  # 0.5. From 0.5, G overshoots to white within 100 steps and is still there at step 400 (mean 0.895, 50 % of
  # values > 0.98); from 0.78 it overshoots less and is back at 0.739 with 0.4 % white by step 400
  # (tools/trace_training.py --steps=400 --every=50, with --set model.initial_output_level=0.5 for the former).
  config.model.initial_output_level = 0.78

  # The longest caption (3 objects) has 29 wordpieces with the MiniLM vocab; 2 objects at most 20, 1 object 11.
  config.text_encoder.max_length = 32
  # A fixed random vector per word piece (issue 5's prototype encoder) instead of MiniLM's last layer: in MiniLM's
  # sentence vectors position words explain ~3 % of the variance against ~30 % for colour, and position was
  # learned ~10x slower. One-object colour+position, 512 held-out captions: at step 4,000 0.70 with random words
  # (H200, tools/sweep_shapes.py) vs 0.09 with MiniLM (2-core CPU); random words reach 0.99 by step 8,000, MiniLM
  # peaked at 0.29 (step 14,000). In 20 minutes here (make demo): 0.41 random words, 0.29 MiniLM's input
  # embeddings (features=embeddings), 0.08 MiniLM's last layer. MiniLM stays the encoder of every other config;
  # `--set text_encoder.features=contextual` brings it back here.
  config.text_encoder.features = "random_words"

  # Short CPU runs: the prototypes' best Adam settings (2e-4 for both) and a shorter EMA horizon (~200 steps).
  config.optim.g_lr = 2e-4
  config.optim.d_lr = 2e-4
  config.optim.ema_decay = 0.995

  config.dataset.name = "shapes"
  config.dataset.train_split = "train"          # 20,000 images
  config.dataset.eval_split = "validation"      # 2,000 images
  config.dataset.shuffle_buffer = 2000
  # Captions name left and right, so a horizontal flip would contradict them: the pipeline must not flip.
  config.dataset.random_flip = False

  config.eval.every_steps = 1000
  config.eval.num_images = 512
  config.eval.batch_size = 64
  return config
