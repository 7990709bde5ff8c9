"""The product2d experiment (docs/experiments.md)."""
