"""Input pipelines (tf.data/TFDS), tokenisation and the captioned-shapes dataset."""
