"""LN-COCO (Localized Narratives on COCO 2017 images) with the paper's model settings (those of configs/coco.py).

    python -m xmc_gan_jax.data.localized_narratives --config=coco --manual_dir=LN_DIR --data_dir=DATA_DIR  # once
    python -m xmc_gan_jax.main --config=configs/ln_coco.py --workdir=gs://BUCKET/xmc_ln_coco \\
        --config.dataset.data_dir=DATA_DIR --config.text_encoder.path=bert-base-uncased          # 256 px (paper)
    python -m xmc_gan_jax.main --config=configs/ln_coco.py:res=128 --workdir=...                  # 128 px

Paper: FID 14.12 / IS 28.37 at 256 px (their Keras-Inception FID; we report the standard FID).

Data: 134,272 train / 8,573 validation narratives (one example per narrative; some images have several). LN_DIR
holds the LN JSONL files and the COCO 2017 images; the layout is in xmc_gan_jax/data/localized_narratives.py.

Text encoder: BERT-base uncased is required: download an HF-format folder (config.json, vocab.txt,
model.safetensors) once, e.g. `huggingface-cli download bert-base-uncased --local-dir bert-base-uncased`, and pass
it with --config.text_encoder.path. Narratives are long (42 words on average), so 64 tokens incl. [CLS]/[SEP].
"""
from configs import coco


def get_config(arg=None):
  config = coco.get_config(arg)      # paper model settings; accepts res=128|256
  config.text_encoder.max_length = 64   # the original's LN constant

  config.dataset.name = "ln_coco"
  config.dataset.train_split = "train"         # 134,272 narratives
  config.dataset.eval_split = "validation"     # 8,573 narratives (eval.num_images beyond it cycles with new captions)
  return config
