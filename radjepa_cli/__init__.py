"""radjepa: chest X-ray representation learning (RadJEPA / I-JEPA) and the paper's frozen-encoder evaluations."""

__version__ = "0.1.0"
