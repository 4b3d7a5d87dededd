"""XMC-GAN (Zhang et al., CVPR 2021) in JAX/Flax."""
