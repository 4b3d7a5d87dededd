"""Issue 18 for `python -m xmc_gan_jax.sample`: bad requests fail before any checkpoint is loaded or image
generated, with an error naming the flag or file; long generations print progress; prompts the vocabulary
cannot read get a warning. No checkpoint is needed: the workdir given does not even exist."""
import types

import numpy as np
import pytest

from xmc_gan_jax import sample

NO_RUN = "/nonexistent/run"  # errors must fire before the workdir is even looked at


def _main(capsys, *args):
  code = sample.main([f"--workdir={NO_RUN}", *args])
  return code, capsys.readouterr().err


def test_negative_seed_names_the_flag(capsys, tmp_path):
  code, err = _main(capsys, "--prompt=a red circle", "--seed=-1", f"--out={tmp_path / 'g.png'}")
  assert code == 2 and "--seed must be a non-negative integer, got -1" in err


def test_non_utf8_prompts_file_names_the_file(capsys, tmp_path):
  path = tmp_path / "prompts.txt"
  path.write_bytes("a red circle\n".encode() + "un cercle énorme\n".encode("latin-1"))
  code, err = _main(capsys, f"--prompts-file={path}", f"--out={tmp_path / 'g.png'}")
  assert code == 2 and f"--prompts-file '{path}' is not UTF-8 text" in err


def test_out_that_is_a_folder_fails_before_generating(capsys, tmp_path):
  code, err = _main(capsys, "--prompt=a red circle", f"--out={tmp_path}")
  assert code == 2 and f"--out={tmp_path} is an existing folder" in err


def test_out_dir_that_is_a_file_fails(capsys, tmp_path):
  (tmp_path / "f").write_text("x")
  code, err = _main(capsys, "--prompt=a red circle", f"--out-dir={tmp_path / 'f'}")
  assert code == 2 and "is an existing file" in err


@pytest.mark.parametrize("num,prompts", [(100_000, 1), (65, 1), (64, 17)])
def test_too_large_grid_fails_before_generating(capsys, tmp_path, num, prompts):
  code, err = _main(capsys, *[f"--prompt=p{i}" for i in range(prompts)], f"--num={num}",
                    f"--out={tmp_path / 'g.png'}")
  assert code == 2 and "grid" in err and "too large" in err and "--out-dir" in err, err


def test_large_num_with_out_dir_only_is_allowed_up_to_the_workdir_check(capsys, tmp_path):
  code, err = _main(capsys, "--prompt=a red circle", "--num=100000", f"--out-dir={tmp_path / 'many'}")
  assert code == 2 and "Workdir" in err  # the request itself is fine; only the missing run stops it


def test_long_generation_prints_progress_per_chunk(capsys):
  calls = []

  def samples(params, batch_stats, ids, mask, z):
    calls.append(ids.shape[0])
    return np.zeros((ids.shape[0], 4, 4, 3), np.float32)

  fake_runtime = types.SimpleNamespace(samples=samples)
  state = types.SimpleNamespace(ema_params=None, g_params=None, g_batch_stats=None)
  n = 2 * sample.MAX_CHUNK + 5
  ids, z = np.zeros((n, 6), np.int32), np.zeros((n, 3), np.float32)
  chunks = list(sample.generate_chunks(fake_runtime, state, ids, ids, z, progress=sample._print_progress))
  assert [c.shape[0] for _, c in chunks] == [sample.MAX_CHUNK, sample.MAX_CHUNK, 5]
  assert calls == [sample.MAX_CHUNK] * 3  # the last chunk is padded: one compiled shape
  lines = capsys.readouterr().err.splitlines()
  assert [line.split()[1] for line in lines] == [f"{sample.MAX_CHUNK}/{n}", f"{2 * sample.MAX_CHUNK}/{n}",
                                                 f"{n}/{n}"]


def test_mostly_unknown_prompt_gets_a_warning_naming_it():
  from xmc_gan_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  vocab = tokenizer_lib.default_vocab_path()
  tokenizer = tokenizer_lib.BertTextTokenizer(vocab, 17)
  prompts = ["a small red circle in the top left", "左上角有一个红色的小圆圈"]
  ids, mask = tokenizer.tokenize(prompts)
  unk = tokenizer_lib.read_vocab(vocab).index(tokenizer_lib.UNK_TOKEN)
  warnings = sample.unknown_word_warnings(prompts, ids, mask, unk, (tokenizer.cls_id, tokenizer.sep_id))
  assert len(warnings) == 1 and "prompt 1" in warnings[0] and prompts[1] in warnings[0], warnings
