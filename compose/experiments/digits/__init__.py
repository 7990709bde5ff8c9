"""The digits experiment (docs/experiments.md)."""
