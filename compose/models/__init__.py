"""Networks, training and checkpoints: reusable by users, used by the experiments.

``nets``                 the residual MLP of the 2D experiment
``unet``                 small UNet, noise-aware and evaluation classifiers for 8×8 images
``training``             noise-prediction training with EMA
``classifier_training``  training and accuracy of classifiers
``checkpoints``          save and load networks with their architecture and schedule
``data``                 the 8×8 digits that scikit-learn ships, as images
"""
