"""Text to images with a trained checkpoint's EMA generator.

  python -m xmc_gan_jax.sample --workdir=W --prompt="a small red circle in the top left" [--prompt=...]
      [--prompts-file=F] [--num=4] [--seed=0] [--step=S] [--raw] --out=grid.png [--out-dir=DIR]

Rebuilds the config from the checkpoint's metadata (or W/config.json), restores the latest checkpoint (or
--step), tokenises the prompts like the training data and writes a PNG grid with one row per prompt, --num
images per prompt, and each image's prompt printed below it. --out-dir also writes each image at the model
resolution as PROMPT_SAMPLE.png (PROMPT.png when --num=1) plus prompts.txt. The noise is a pure function of
--seed: the same seed gives the same images, and sample j uses the same z for every prompt. Every path (--workdir,
--prompts-file, --out, --out-dir) may be local or gs://... (read and written through etils.epath).

Limits (checked before anything is generated): the --out grid holds at most MAX_GRID_PER_PROMPT (64) images per
prompt and MAX_GRID_IMAGES (1024) in all; more images go to --out-dir alone, which is written chunk by chunk.
Generations of more than one chunk print their progress to stderr.
"""
import argparse
import io
import json
import os
import sys
import time

import numpy as np
from etils import epath

from xmc_gan_jax import paths

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MAX_CHUNK = 32  # images per generator call (the last chunk is padded, so each shape compiles once)
MAX_GRID_PER_PROMPT = 64  # columns of the --out grid (one row per prompt)
MAX_GRID_IMAGES = 1024    # cells of the --out grid (~150 MB of canvas at the default 192 px cells)
MOSTLY_UNKNOWN = 0.5      # warn when more than this fraction of a prompt's word pieces are [UNK]


def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
  """--prompt values then the non-empty lines of --prompts-file (lines starting with '#' are comments)."""
  out = list(prompts or [])
  if prompts_file:
    path = epath.Path(prompts_file)
    if not path.is_file():
      raise FileNotFoundError(f"--prompts-file {prompts_file!r} does not exist.")
    try:
      text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"--prompts-file {prompts_file!r} is not UTF-8 text (byte {e.start} is "
                       f"{e.object[e.start:e.start + 1]!r}); save it as UTF-8.") from e
    lines = [line.strip() for line in text.splitlines()]
    out += [line for line in lines if line and not line.startswith("#")]
  if not out:
    raise ValueError("No prompts: give --prompt=\"...\" (repeatable) or --prompts-file with one prompt per line.")
  for i, prompt in enumerate(out):
    if not prompt.strip():
      raise ValueError(f"Prompt {i} is empty.")
  return out


def sample_noise(seed: int, num: int, z_dim: int) -> np.ndarray:
  """float32 [num, z_dim] standard normal noise; a pure function of (seed, num, z_dim)."""
  return np.random.default_rng(seed).standard_normal((num, z_dim), dtype=np.float32)


def load_run_config(workdir: str, checkpointer, step: int):
  """The config that trained `step`: its checkpoint's {"config": json} metadata, else WORKDIR/config.json."""
  text = None
  try:
    text = checkpointer.restore_meta(step).get("config")
  except (FileNotFoundError, ValueError, KeyError):
    text = None
  if text is None:
    path = epath.Path(workdir) / "config.json"
    if not path.is_file():
      raise FileNotFoundError(f"Neither the checkpoint of step {step} nor {path} holds the run's config.")
    text = path.read_text()
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(json.loads(text) if isinstance(text, str) else dict(text))


def check_request(args: argparse.Namespace, num_prompts: int) -> None:
  """Raises ValueError (naming the flag) for requests that would fail or explode only after generating."""
  if args.num < 1:
    raise ValueError(f"--num must be >= 1, got {args.num}.")
  if args.seed < 0:
    raise ValueError(f"--seed must be a non-negative integer, got {args.seed}; e.g. --seed=0.")
  if not args.out and not args.out_dir:
    raise ValueError("Give --out=grid.png and/or --out-dir=DIR.")
  if args.out:
    out = epath.Path(args.out)
    if out.is_dir():
      raise ValueError(f"--out={args.out} is an existing folder; give a PNG file name, e.g. --out={out / 'grid.png'} "
                       f"(or --out-dir={args.out} for single images).")
    # (A bucket has no files that could stand in a folder's way; its parents are not probed.)
    if not paths.is_remote(args.out) and any(parent.exists() and not parent.is_dir() for parent in out.parents):
      raise ValueError(f"--out={args.out}: a parent of it is a file, not a folder.")
    total = num_prompts * args.num
    if args.num > MAX_GRID_PER_PROMPT or total > MAX_GRID_IMAGES:
      raise ValueError(
          f"--out grid of {num_prompts} prompt(s) x --num={args.num} = {total} images is too large: a grid holds at "
          f"most {MAX_GRID_PER_PROMPT} images per prompt and {MAX_GRID_IMAGES} in all. Lower --num (e.g. "
          f"--num={min(MAX_GRID_PER_PROMPT, max(1, MAX_GRID_IMAGES // num_prompts))}), or drop --out and write "
          f"single images with --out-dir.")
  if args.out_dir and epath.Path(args.out_dir).exists() and not epath.Path(args.out_dir).is_dir():
    raise ValueError(f"--out-dir={args.out_dir} is an existing file, not a folder.")


def unknown_word_warnings(prompts: list[str], ids: np.ndarray, mask: np.ndarray, unk_id: int,
                          special_ids: tuple[int, ...]) -> list[str]:
  """Warnings for prompts whose word pieces are mostly [UNK] (another language or script than the vocabulary's),
  which the generator would see as almost no text."""
  out = []
  for i, prompt in enumerate(prompts):
    pieces = ids[i][(mask[i] > 0) & ~np.isin(ids[i], special_ids)]
    unknown = int(np.sum(pieces == unk_id))
    if pieces.size == 0 or unknown > MOSTLY_UNKNOWN * pieces.size:
      out.append(f"warning: prompt {i} ({prompt!r}) is {unknown} of {pieces.size} word pieces [UNK] for this "
                 "text encoder's vocabulary: the images will hardly depend on it. Use the language of the "
                 "training captions.")
  return out


def generate_chunks(runtime, state, token_ids: np.ndarray, token_mask: np.ndarray, z: np.ndarray,
                    use_ema: bool = True, progress=None):
  """Yields (start, images float [n, H, W, 3] in [0, 1]) for N token and noise rows, in chunks of <= MAX_CHUNK.
  `progress(done, total, seconds)`, if given, is called after each chunk."""
  params = state.ema_params if use_ema else state.g_params
  n = token_ids.shape[0]
  chunk = min(n, MAX_CHUNK)
  began = time.time()
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    pad = chunk - (stop - start)
    take = lambda a: np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], pad, axis=0)]) if pad else a[start:stop]
    images = runtime.samples(params, state.g_batch_stats, take(token_ids), take(token_mask), take(z))
    yield start, np.asarray(images)[:stop - start]
    if progress is not None:
      progress(stop, n, time.time() - began)


def generate(runtime, state, token_ids: np.ndarray, token_mask: np.ndarray, z: np.ndarray,
             use_ema: bool = True) -> np.ndarray:
  """Images float [N, H, W, 3] in [0, 1] for N token rows and N noise rows, in chunks of <= MAX_CHUNK."""
  return np.concatenate([images for _, images in generate_chunks(runtime, state, token_ids, token_mask, z, use_ema)])


def _write_png(image: np.ndarray, path: epath.Path) -> None:
  """uint8 [H, W, 3] as a PNG file at `path` (local or remote)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  path.write_bytes(buffer.getvalue())


def _print_progress(done: int, total: int, seconds: float) -> None:
  left = seconds / max(done, 1) * (total - done)
  print(f"sampling: {done}/{total} images, {seconds:.0f} s, ~{left:.0f} s left", file=sys.stderr, flush=True)


def _single_device_config(config):
  """Sampling runs on one device whatever mesh trained the run (checkpoints reshard on restore)."""
  config.mesh.data = 1
  config.mesh.fsdp = 1
  return config


def open_run(workdir: str, step: int | None = None):
  """(read-only Checkpointer, step, config) of a training run: `step` defaults to the latest checkpoint; the config
  is the one that trained it (`load_run_config`), set to one device. FileNotFoundError without that checkpoint."""
  from xmc_gan_jax import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt_dir = epath.Path(workdir) / checkpointing.CHECKPOINT_DIR
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True) if ckpt_dir.is_dir() else None
  steps = checkpointer.all_steps() if checkpointer else []
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {ckpt_dir}: train first (make demo WORKDIR={workdir}, or "
                            f"python -m xmc_gan_jax.main --config=... --workdir={workdir}).")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f"No checkpoint for --step={step} in {ckpt_dir}; available steps: {steps}.")
  return checkpointer, step, _single_device_config(load_run_config(workdir, checkpointer, step))


def run(args: argparse.Namespace) -> str:
  """Does the work of `main`; returns a one-line summary. Raises FileNotFoundError / ValueError on bad input."""
  prompts = read_prompts(args.prompt, args.prompts_file)
  check_request(args, len(prompts))
  if not epath.Path(args.workdir).is_dir():
    raise FileNotFoundError(f"Workdir {args.workdir!r} does not exist; pass the --workdir of a training run.")

  import jax  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import image_grid, runtime as runtime_lib, sharding  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  checkpointer, step, config = open_run(args.workdir, args.step)
  runtime = runtime_lib.Runtime(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]))
  state = runtime.restore(checkpointer, step)
  checkpointer.close()

  tokenizer = tokenizer_lib.BertTextTokenizer(runtime.text.vocab_path, int(config.text_encoder.max_length))
  tokens = tokenizer.tokenize_tf(prompts)
  for i in np.flatnonzero(tokens.truncated.numpy()):
    print(f"warning: prompt {i} is longer than {config.text_encoder.max_length} tokens and was truncated.",
          file=sys.stderr)
  unk_id = tokenizer_lib.read_vocab(runtime.text.vocab_path).index(tokenizer_lib.UNK_TOKEN)
  for warning in unknown_word_warnings(prompts, tokens.ids.numpy(), tokens.mask.numpy(), unk_id,
                                       (tokenizer.cls_id, tokenizer.sep_id)):
    print(warning, file=sys.stderr)
  ids = np.repeat(tokens.ids.numpy(), args.num, axis=0)  # prompt-major: prompt i, sample j at i * num + j
  mask = np.repeat(tokens.mask.numpy(), args.num, axis=0)
  z = np.tile(sample_noise(args.seed, args.num, int(config.model.z_dim)), (len(prompts), 1))
  total = ids.shape[0]

  out_dir = epath.Path(args.out_dir) if args.out_dir else None
  if out_dir:
    out_dir.mkdir(parents=True, exist_ok=True)
  kept = []  # uint8 images for the grid (bounded by check_request); --out-dir images are written per chunk
  progress = _print_progress if total > MAX_CHUNK else None
  for start, chunk in generate_chunks(runtime, state, ids, mask, z, use_ema=not args.raw, progress=progress):
    chunk = image_grid.to_uint8(chunk)
    if args.out:
      kept.append(chunk)
    if out_dir:
      for k, image in enumerate(chunk, start):
        i, j = divmod(k, args.num)
        name = f"{i:03d}.png" if args.num == 1 else f"{i:03d}_{j:02d}.png"
        _write_png(image, out_dir / name)
  written = []
  if args.out:
    images = np.concatenate(kept)
    captions = [p for p in prompts for _ in range(args.num)]
    columns = args.num if args.num > 1 else min(len(prompts), 4)
    grid = image_grid.captioned_grid(images, captions, columns=columns)
    out = epath.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_png(grid, out)
    written.append(args.out)
  if out_dir:
    (out_dir / "prompts.txt").write_text("".join(f"{i:03d}\t{p}\n" for i, p in enumerate(prompts)),
                                         encoding="utf-8")
    written.append(f"{total} images in {out_dir}")
  which = "raw" if args.raw else "EMA"
  return (f"{total} images ({len(prompts)} prompts x {args.num}) from the {which} generator of step "
          f"{step}, seed {args.seed}: {', '.join(written)}")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m xmc_gan_jax.sample", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="training run directory (holds checkpoints/)")
  parser.add_argument("--prompt", action="append", default=[], help="a caption; repeat for several")
  parser.add_argument("--prompts-file", help="text file with one prompt per line")
  parser.add_argument("--num", type=int, default=4, help="images per prompt (default 4)")
  parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  parser.add_argument("--raw", action="store_true", help="use the raw generator instead of the EMA one")
  parser.add_argument("--out", help="captioned grid PNG to write, e.g. grid.png")
  parser.add_argument("--out-dir", help="folder for the single images (PNG at model resolution)")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    summary = run(args)
  except (OSError, ValueError) as e:  # FileNotFoundError, PermissionError, IsADirectoryError, bad values
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
