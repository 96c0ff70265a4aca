"""The classic anomaly-segmentation baselines, each built on fsbench's public API."""
