"""fsbench: anomaly detection in semantic segmentation, built around the Fishyscapes benchmark."""

__version__ = "0.1.0"
