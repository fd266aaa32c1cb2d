"""Data layer: CMU-MOSI computational sequences, alignment, folds, loaders and the batch contract."""
