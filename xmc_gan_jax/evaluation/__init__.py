"""FID/KID/IS evaluation with a Flax port of the FID Inception network."""
