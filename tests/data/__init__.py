"""Tests of `aduni_hf.data`: the builders on raw data in the official layouts, prepare, folds, views."""
