"""Components: the leaves of a composition, each a noised density family over levels t = 1..T.

``base``      the Component base class (operators, conditions, level checks)
``network``   ScoreModel, EnergyModel, Classifier: components defined by a network
``analytic``  GaussianMixture, UniformBox: closed-form oracles

Components that know log p_t(x) up to a constant (`has_log_density = True`) let the compiler
take exact log-density differences; the others are integrated along a path (docs/delta.md).
"""
from .analytic import AnalyticComponent, ExactNoisePrediction, GaussianMixture, UniformBox
from .base import Component, Conditions
from .network import Classifier, EnergyModel, NetworkComponent, ScoreModel

__all__ = ["AnalyticComponent", "Classifier", "Component", "Conditions", "EnergyModel",
           "ExactNoisePrediction", "GaussianMixture", "NetworkComponent", "ScoreModel", "UniformBox"]
