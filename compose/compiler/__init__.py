"""Compile an expression tree into a target: a composed score field and a Δ evaluator.

``terms``        flatten the tree into weighted terms; merge repeated ones
``target``       the Target: composed score, exact and integrated Δ (line or leapfrog curve)
``quadrature``   the rules that integrate the score along a path
``plan``         what the target evaluates, how, and how often
``compilation``  `compile`: strings, trees or components into a Target
"""
from .compilation import compile
from .plan import Plan, PlanCall, PlanTerm
from .target import PATHS, Evaluation, EvaluationCounter, Target
from .terms import MixtureDensity, Term

__all__ = ["Evaluation", "EvaluationCounter", "MixtureDensity", "PATHS", "Plan", "PlanCall",
           "PlanTerm", "Target", "Term", "compile"]
