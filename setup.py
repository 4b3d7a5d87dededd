"""xmc_gan_jax: XMC-GAN (cross-modal contrastive text-to-image GAN) in JAX/Flax."""
import setuptools

setuptools.setup(
    name="xmc_gan_jax",
    version="0.1.0",
    description="XMC-GAN text-to-image contrastive GAN in JAX/Flax (TPU/GPU/CPU).",
    packages=setuptools.find_packages(include=["xmc_gan_jax", "xmc_gan_jax.*", "configs"]),
    python_requires=">=3.11",
    # The core (models, losses, steps, sharding) needs only these; data and eval need requirements.txt.
    install_requires=["jax", "flax", "optax", "orbax-checkpoint", "ml_collections", "numpy", "safetensors"],
    extras_require={
        "data": ["tensorflow-cpu", "tensorflow-datasets", "importlib_resources"],
        "logging": ["clu", "tensorboard", "pillow"],
        "test": ["pytest", "scipy"],
    },
)
