"""The StyleGAN networks in backend-neutral `keras.ops` (TensorFlow, JAX, PyTorch), forward pass only so far.

Nothing here imports TensorFlow: the backend is Keras' (KERAS_BACKEND). docs/training.md, "Backends".
"""
