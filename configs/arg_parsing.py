"""Parses the `:key=value,key=value` suffix of a config path (e.g. `configs/coco.py:res=128`)."""


def parse_config_arg(arg: str | None, defaults: dict) -> dict:
  """Returns `defaults` updated from `arg`; values are cast to the type of the default. Unknown keys raise."""
  values = dict(defaults)
  if not arg:
    return values
  for item in arg.split(","):
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or key not in defaults:
      raise ValueError(f"Unknown config argument {item!r}; expected key=value with key in {sorted(defaults)}.")
    values[key] = type(defaults[key])(raw.strip())
  return values
