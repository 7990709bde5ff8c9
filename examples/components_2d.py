"""Components of the 2D product experiment, for `compose plan` (docs/experiments.md).

    compose plan "ring * bar" --components examples/components_2d.py --kernel HMC --path curve
    compose plan "ring_score * bar" --components examples/components_2d.py --kernel MALA --points 3

`ring`: 8 equal-weight Gaussians, means 0.5 (cos 2πk/8, sin 2πk/8), std 0.03 (analytic).
`bar`: uniform on [−0.2, 0.2] × [−1, 1] (analytic).
`ring_score`: the ring seen only through its exact score, as a trained ε-network would be;
compositions with it integrate Δ along a path.
All on the cosine schedule with T = 100. Every top-level component is bound by its name.
"""
import compose
from compose.experiments.product2d.target import BAR_HIGH, BAR_LOW, RING_MEANS, RING_STD

schedule = compose.Schedule.cosine(100)

ring = compose.GaussianMixture(RING_MEANS, RING_STD, schedule=schedule, name="ring")
bar = compose.UniformBox(BAR_LOW, BAR_HIGH, schedule=schedule, name="bar")
ring_score = compose.ScoreModel.from_analytic(ring, name="ring_score")
