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
from configs import common

def get_config(arg=None):
  args = common.parse_variant(arg, {"res": 32})
  if args["res"] not in (32, 64):
    raise ValueError(f"shapes.py supports res=32 or res=64 (the captioned_shapes configs), got {args['res']}.")
  config = common.get_base_config()
  # Batch 8 with one D step per G step: G and D both see 8 examples per update. Against batch 16 with two D steps
  # (G 8, D 2 x 8) and against batch 16 with one D step (G and D 16), in 10 minutes on 2 CPU cores from the same
  # seed (tools/sweep_shapes.py --parallel=1, at commit edaf0b2), one-object colour+position: 0.416 (2,286 steps)
  # vs 0.310 (2,152) vs 0.183 (1,364).
  config.batch_size = 8
  config.optim.d_steps_per_g_step = 1
  config.total_steps = 5000
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 500
  config.num_sample_images = 16

  config.model.image_size = args["res"]
  # Widths 16; G's blocks 8, 4 | 2 x 16 = 128 (8x8), 64 (16x16) | 32 channels (32x32) instead of the table's
  # 256, 128 | 16: 0.55 -> 0.26 GFLOP per generated image, and twice the channels where shapes are drawn.
  # D: 32, 64, 128. Widths 32 instead of 16 learned no faster per step on the H200 and cost 3.5x per step here.
  config.model.gf_dim = 16
  config.model.df_dim = 16
  # The 64 px variant keeps the table's G (16, 8 | 2, 1): the narrower one was only measured at 32 px.
  config.model.g_channel_multipliers = (8, 4, 2) if args["res"] == 32 else ()
  config.model.cond_size = 16
  # Untrained G's pixels centre on 0.78 (the grey background is 200/255; the data's mean pixel is 0.76) instead of
  # 0.5. From 0.5, G overshoots to white within 100 steps and is still there at step 400 (mean 0.895, 50 % of
  # values > 0.98); from 0.78 it overshoots less and is back at 0.739 with 0.4 % white by step 400
  # (tools/trace_training.py --steps=400 --every=50 at commit edaf0b2, with model.initial_output_level=0.5 for the
  # former).
  config.model.initial_output_level = 0.78

  # The longest caption (3 objects) has 29 wordpieces with the MiniLM vocab; 2 objects at most 20, 1 object 11.
  config.text_encoder.max_length = 32
  # A fixed random vector per word piece (issue 5's prototype encoder) instead of MiniLM's last layer: in MiniLM's
  # sentence vectors position words explain ~3 % of the variance against ~30 % for colour, and position was
  # learned ~10x slower. One-object colour+position, 512 held-out captions: at step 4,000 0.70 with random words
  # (H200, tools/sweep_shapes.py) vs 0.09 with MiniLM (2-core CPU); random words reach 0.99 by step 8,000, MiniLM
  # peaked at 0.29 (step 14,000). In 20 minutes here (make demo, previous batch 16 schedule): 0.41 random
  # words, 0.29 MiniLM's input embeddings (features=embeddings), 0.08 MiniLM's last layer. MiniLM stays the
  # encoder of every other config; `--config.text_encoder.features=contextual` brings it back here.
  config.text_encoder.features = "random_words"

  # Short CPU runs: Adam 3e-4 for both (the prototypes' best was 2e-4) and a shorter EMA horizon (~200 steps).
  # After 10 minutes here (tools/sweep_shapes.py --parallel=1, at commit edaf0b2), one-object colour+position 0.858
  # at step 2,943 with 3e-4 and 0.822 at step 2,998 with 4e-4; 2e-4 stood at 0.249 at step 2,000 (3e-4: 0.386, 4e-4:
  # 0.289).
  config.optim.g_lr = 3e-4
  config.optim.d_lr = 3e-4
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
