"""Experiment configs (ml_collections); `get_config(arg)` in each file."""
