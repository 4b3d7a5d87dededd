"""LN-OpenImages (Localized Narratives on Open Images V6) with the paper's model settings (those of configs/coco.py).

    python -m xmc_gan_jax.data.localized_narratives --config=open_images --manual_dir=LN_DIR --data_dir=DATA_DIR
    python -m xmc_gan_jax.main --config=configs/ln_openimages.py --workdir=gs://BUCKET/xmc_ln_oi \\
        --config.dataset.data_dir=DATA_DIR --config.text_encoder.path=bert-base-uncased          # 256 px (paper)
    python -m xmc_gan_jax.main --config=configs/ln_openimages.py:res=128 --workdir=...            # 128 px

Paper: FID 26.91 / IS 24.90 at 256 px (a benchmark the paper introduced; their Keras-Inception FID, we report
the standard FID).

Data: 507,444 train / 41,691 validation / 126,020 test narratives. LN_DIR holds the LN JSONL files and the Open
Images V6 train/validation/test images (<image_id>.jpg); the layout is in
xmc_gan_jax/data/localized_narratives.py.

Text encoder: BERT-base uncased is required: download an HF-format folder (config.json, vocab.txt,
model.safetensors) once, e.g. `huggingface-cli download bert-base-uncased --local-dir bert-base-uncased`, and pass
it with --config.text_encoder.path. Max length 64 tokens incl. [CLS]/[SEP], as for LN-COCO.
"""
from configs import coco


def get_config(arg=None):
  config = coco.get_config(arg)      # paper model settings; accepts res=128|256
  config.text_encoder.max_length = 64   # the original's LN constant

  config.dataset.name = "ln_openimages"
  config.dataset.train_split = "train"         # 507,444 narratives
  config.dataset.eval_split = "validation"     # 41,691 narratives
  return config
