"""Test setup: 8 fake CPU devices and quiet TensorFlow; must run before jax is imported."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Persistent XLA cache: identical programs (the same train step in several tests or subprocesses) compile once.
import tempfile  # pylint: disable=g-import-not-at-top

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "xmc_gan_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The longest test files (cold-cache minutes on 2 cores), run first: `make test` shares the files among pytest-xdist
# workers (`--dist loadfile`), and a long file picked up last would run alone at the end.
LONGEST_FIRST = (
    "tests/multihost/test_two_processes.py",
    "tests/core/test_train_step.py",
    "tests/core/test_main.py",
    "tests/core/test_resume.py",
    "tests/evaluation/test_evaluator.py",
    "tests/test_describe_topology.py",
)


def pytest_collection_modifyitems(config, items):
  """Stable reorder: the files of LONGEST_FIRST first, in that order; everything else keeps its order."""
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  root = str(config.rootpath)

  def key(item):
    path = os.path.relpath(str(item.path), root).replace(os.sep, "/")
    return rank.get(path, len(rank))

  items.sort(key=key)
