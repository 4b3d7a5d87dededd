"""Flax Linen models: generator, discriminator, text encoder and shared layers."""
