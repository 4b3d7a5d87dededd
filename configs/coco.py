"""MS-COCO 2014 with the paper's model and training settings (XMC-GAN, Zhang et al. CVPR 2021).

    python -m xmc_gan_jax.main --config=configs/coco.py --workdir=gs://BUCKET/xmc_coco       # 256 px (paper)
    python -m xmc_gan_jax.main --config=configs/coco.py:res=128 --workdir=...                # released 128 px
    python -m xmc_gan_jax.main --config=configs/coco.py:res=128 --mode=describe              # sizes, FLOPs

Paper: FID 9.33 / IS 30.45 at 256 px (their Keras-Inception FID; we report the standard FID). The released 128 px
config reached FID ~10.5-11.0 (EMA) on 7 GPUs at 8 examples per GPU per sub-step.

Text encoder: BERT-base uncased, an HF-format folder (config.json, vocab.txt, model.safetensors) that you download
once, e.g. `huggingface-cli download bert-base-uncased --local-dir bert-base-uncased`, then
`--config.text_encoder.path=bert-base-uncased`. `--mode=describe` works without the weights.

Pod variants (`pod=NAME`, e.g. `configs/coco.py:res=256,pod=v4-32`) keep the original's 8 examples per device per
sub-step (BatchNorm and contrastive groups of 8) on every chip of a Cloud TPU slice: batch_size = 2 sub-steps x 8 x
chips (v4-32: 16 chips, batch 256). Without `pod`, the batch is the original's 112 (7 GPUs).
"""
from configs import common

# Chips (one JAX device each; v4 and v5p chips are one megacore device) of the Cloud TPU slices we have configs for.
POD_CHIPS = {"v4-8": 4, "v4-16": 8, "v4-32": 16, "v4-64": 32, "v4-128": 64, "v5litepod-4": 4, "v5litepod-8": 8,
             "v5litepod-16": 16, "v5litepod-32": 32, "v5litepod-64": 64, "v5p-8": 4, "v5p-32": 16, "v5p-128": 64,
             "v6e-8": 8, "v6e-16": 16, "v6e-64": 64}
EXAMPLES_PER_DEVICE = 8  # per sub-step, as the original's pmap (8 per GPU)


def get_config(arg=None):
  args = common.parse_variant(arg, {"res": 256, "pod": ""})
  if args["res"] not in (128, 256):
    raise ValueError(f"coco.py supports res=128 or res=256, got {args['res']}.")
  if args["pod"] and args["pod"] not in POD_CHIPS:
    raise ValueError(f"coco.py: unknown pod={args['pod']!r}; one of {sorted(POD_CHIPS)} (the accelerator type).")
  config = common.get_base_config()
  # The original: 56 examples per sub-step (8 per device on 7 GPUs), two sub-steps per train step.
  config.batch_size = 112
  if args["pod"]:
    config.batch_size = 2 * EXAMPLES_PER_DEVICE * POD_CHIPS[args["pod"]]
  config.total_steps = 370_000          # what the released loader delivers (~500 epochs at 112 per step)
  config.log_every_steps = 1000
  config.checkpoint_every_steps = 5000
  config.sample_every_steps = 1000
  config.keep_checkpoints = 5
  config.num_sample_images = 64

  config.model.image_size = args["res"]
  config.model.gf_dim = 96
  config.model.df_dim = 96
  config.model.batch_norm_group_size = 8      # the original's per-device BatchNorm
  config.model.dtype = "bfloat16"
  config.loss.contrastive_group_size = 8     # the original's per-device negatives

  config.text_encoder.path = "bert-base-uncased"
  config.text_encoder.pooling = "original"
  config.text_encoder.max_length = 17

  config.dataset.name = "coco"
  config.dataset.train_split = "train"                 # 82,783 images
  config.dataset.eval_split = "restval+test+val"       # 40,504 images (all of COCO-2014 val)

  config.eval.every_steps = 5000
  config.eval.num_images = 2000
  config.eval.batch_size = 64
  config.eval.standalone_num_images = 30_000
  config.eval.repeats = 3
  return config
