"""Local or remote (gs://bucket/...) paths for everything a user names: workdirs, data dirs, the BERT folder,
statistics and weights files, sample output.

Code reads and writes such paths through `etils.epath` (gs:// goes through tf.io.gfile, or fsspec without
TensorFlow), never through pathlib or os.path, which turn "gs://b/x" into the local relative path "gs:/b/x".
Readers that need a local file (safetensors' memory map, the tokenizer) get one from `local_copy`: a remote
file or folder is copied once into the local cache and reused while its file names and sizes stay the same.
"""
import hashlib
import json
import os
import shutil
import tempfile

from etils import epath


def is_remote(path) -> bool:
  """Whether `path` names a remote filesystem (a URI such as gs://bucket/x)."""
  return "://" in os.fspath(path)


def cache_root() -> str:
  """Where `local_copy` keeps remote files: $XDG_CACHE_HOME (or ~/.cache)/xmc_gan_jax/remote."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "xmc_gan_jax", "remote")


def _listing(folder: epath.Path, prefix: str = "") -> list[tuple[str, int]]:
  """(relative name, size in bytes) of every file under `folder`, sorted."""
  out = []
  for child in sorted(folder.iterdir(), key=lambda p: p.name):
    rel = f"{prefix}{child.name}"
    if child.is_dir():
      out += _listing(child, rel + "/")
    else:
      out.append((rel, int(child.stat().length)))
  return out


def local_copy(path) -> str:
  """`path` itself when it is local; else the path of a local copy of the remote file or folder `path`.

  The copy lives under `cache_root()`, keyed by the remote path and its files' names and sizes, so it is made
  once and remade when the remote changes. It is staged in a temporary folder and moved into place whole, so an
  interrupted copy is never used and processes copying at the same time (several per host) agree on the result.
  Raises FileNotFoundError when the remote path does not exist or cannot be read.
  """
  text = os.fspath(path)
  if not is_remote(text):
    return text
  source = epath.Path(text)
  try:
    if source.is_dir():
      listing = _listing(source)
    elif source.exists():
      listing = [("", int(source.stat().length))]
    else:
      listing = None
  except OSError as e:
    raise FileNotFoundError(f"Cannot read {text} ({type(e).__name__}: {e}); check the path and this machine's "
                            "credentials (e.g. `gsutil ls` it).") from e
  if listing is None:
    raise FileNotFoundError(f"{text} does not exist (or this machine's credentials cannot see it).")
  key = hashlib.sha256(json.dumps([text.rstrip("/"), listing]).encode("utf-8")).hexdigest()[:24]
  name = source.name or "root"
  parent = os.path.join(cache_root(), key)
  target = os.path.join(parent, name)
  if os.path.exists(target):
    return target
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".partial-", dir=parent)
  try:
    staged = os.path.join(staging, name)
    for rel, _ in listing:
      src = source / rel if rel else source
      dst = os.path.join(staged, rel) if rel else staged
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      with src.open("rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=16 << 20)
    if not listing:  # an empty remote folder
      os.makedirs(staged, exist_ok=True)
    try:
      os.rename(staged, target)
    except OSError:
      if not os.path.exists(target):  # not a concurrent copy that got there first
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target
