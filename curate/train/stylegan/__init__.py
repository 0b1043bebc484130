"""A progressive StyleGAN (Karras et al. 2019) in TensorFlow 2 for 2:1 portraits: `curate train`."""
