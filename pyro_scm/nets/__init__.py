"""The networks mechanisms and metrics use.

- :mod:`.mlp`: an MLP, a standardiser and a positive scale (tabular mechanisms);
- :mod:`.images`: convolutional and MLP encoders and decoders (VAE mechanisms);
- :mod:`.diffusion`: time-conditioned ε-networks and classifiers (diffusion mechanisms);
- :mod:`.metrics`: the classifier, VAE and autoencoders the image metrics train.
"""

from .mlp import MLP, SOFTPLUS_ONE, Standardizer, positive_scale, positive_scale_inverse

__all__ = ["MLP", "SOFTPLUS_ONE", "Standardizer", "positive_scale", "positive_scale_inverse"]
