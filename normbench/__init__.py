"""normbench: a benchmark of normalization strategies (BN, max-norm, SELU) in deep networks.

Importing this package does not import Keras, so the CLI can choose the backend first.
"""

__version__ = "0.1.0"
