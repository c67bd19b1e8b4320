"""normbench: a benchmark of normalization strategies in deep networks.

15 registered strategies (``normbench list strategies``): batch norm before or after the nonlinearity,
layer, group and RMS norm, weight norm (alone or with mean-only BN), spectral norm, max-norm, SELU, the
normalization-free DyT, Derf, weight standardization + group norm and NF nets, and no normalization; on
MLP, CNN, residual and inception builders, trained on real MNIST and CIFAR-10.

Importing this package does not import Keras, so the CLI can choose the backend first.
"""

__version__ = "0.1.0"
