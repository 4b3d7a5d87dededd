"""Soak benchmark: train a config for a while and sample the trainer's resident memory, to catch leaks.

    python tools/soak.py --minutes=60 --every=30 --out=runs/soak [--config=configs/shapes.py] [-- --config.x=y ...]

Runs `python -m xmc_gan_jax.main --config=CONFIG --workdir=OUT/run --config.max_train_seconds=MINUTES*60` (periodic
evaluation as the config sets it) and samples the resident set size of the trainer and its child processes every
--every seconds from /proc (Linux). Writes OUT/rss.csv (seconds, rss_mib) and prints the first, peak and last samples
and the slope of the second half (MiB per 10 minutes), with the step reached. A benchmark, not a test.
"""
import argparse
import csv
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
  """pid and its descendants (from /proc/*/stat parent ids)."""
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        fields = pathlib.Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
      except (OSError, IndexError, ValueError):
        continue
  found, frontier = [pid], [pid]
  while frontier:
    frontier = [p for p, parent in parents.items() if parent in frontier]
    found += frontier
  return found


def rss_mib(pid: int) -> float:
  """Resident memory of pid and its descendants, MiB (0 once they are gone)."""
  total_kib = 0
  for p in _children(pid):
    try:
      for line in pathlib.Path(f"/proc/{p}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
          total_kib += int(line.split()[1])
    except OSError:
      continue
  return total_kib / 1024.0


def slope_per_10_minutes(samples: list[tuple[float, float]]) -> float:
  """Least-squares slope of rss over time in the second half of the samples, MiB per 10 minutes."""
  half = samples[len(samples) // 2:]
  if len(half) < 2:
    return float("nan")
  n = len(half)
  mean_t = sum(t for t, _ in half) / n
  mean_r = sum(r for _, r in half) / n
  var = sum((t - mean_t) ** 2 for t, _ in half)
  return 600.0 * sum((t - mean_t) * (r - mean_r) for t, r in half) / var if var else float("nan")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/shapes.py")
  parser.add_argument("--minutes", type=float, default=60.0, help="training time (max_train_seconds)")
  parser.add_argument("--every", type=float, default=30.0, help="seconds between memory samples")
  parser.add_argument("--out", default="runs/soak")
  parser.add_argument("overrides", nargs="*", help="after --: more flags for xmc_gan_jax.main")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  command = [sys.executable, "-m", "xmc_gan_jax.main", f"--config={args.config}", f"--workdir={out / 'run'}",
             f"--config.max_train_seconds={int(args.minutes * 60)}", *args.overrides]
  log = open(out / "train.log", "w")  # pylint: disable=consider-using-with
  start = time.time()
  trainer = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  samples = []
  # The run also builds its dataset and compiles first: allow that much beyond the training time.
  limit = start + args.minutes * 60 + 1800
  with open(out / "rss.csv", "w", newline="") as f:  # written as it goes: a killed soak keeps its samples
    writer = csv.writer(f)
    writer.writerow(["seconds", "rss_mib"])
    try:
      while trainer.poll() is None:
        if time.time() > limit:
          raise TimeoutError(f"the trainer ran past {args.minutes} min + 30 min; see {out / 'train.log'}")
        samples.append((time.time() - start, rss_mib(trainer.pid)))
        writer.writerow([round(v, 1) for v in samples[-1]])
        f.flush()
        time.sleep(args.every)
    finally:
      if trainer.poll() is None:
        trainer.kill()
      log.close()
  steps = sorted(int(p.name) for p in (out / "run" / "checkpoints").glob("[0-9]*")) if (out / "run").exists() else []
  if not samples:
    print("no samples (the trainer ended before the first one)")
    return 1
  peak = max(samples, key=lambda s: s[1])
  print(f"exit code {trainer.returncode}; last checkpoint step {steps[-1] if steps else None}; "
        f"{len(samples)} samples over {samples[-1][0] / 60:.1f} min\n"
        f"RSS first {samples[0][1]:.0f} MiB, peak {peak[1]:.0f} MiB at {peak[0] / 60:.1f} min, "
        f"last {samples[-1][1]:.0f} MiB; second-half slope {slope_per_10_minutes(samples):+.1f} MiB / 10 min\n"
        f"samples: {out / 'rss.csv'}")
  return trainer.returncode


if __name__ == "__main__":
  raise SystemExit(main())
