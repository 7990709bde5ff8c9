"""Why LA loses to U-LA on the 2D product at the paper's settings: it is the sampler, not Δ.

Runs U-LA, LA with the exact analytic Δ, and LA-3-line (integrated Δ) at η = 0.001, K = 10,
T = 100, 2000 chains, and prints LL, the fraction of samples inside the bar, and the acceptance
at the last levels. Run: python examples/product2d_mala_check.py (about a minute).
"""
import torch
import compose
from compose.experiments.product2d.target import analytic_components, in_bar
from compose.experiments.product2d.likelihood import log_likelihood

torch.set_num_threads(1)
schedule = compose.Schedule.cosine(100)
ring, bar = analytic_components(schedule)
score_only = compose.ScoreModel.from_analytic(ring, name="r") * compose.ScoreModel.from_analytic(bar, name="b")
for name, target, kernel in [("U-LA, exact scores", compose.compile(ring * bar), compose.ULA(0.001)),
                             ("LA, exact Δ", compose.compile(ring * bar), compose.MALA(0.001)),
                             ("LA-3-line", compose.compile(score_only, points=3), compose.MALA(0.001))]:
    r = compose.sample(target, kernel, 2000, steps_per_level=10, generator=torch.Generator().manual_seed(0),
                       progress=False)
    acc = r.diagnostics.acceptance
    print(f"{name:<20} LL {log_likelihood(r.samples):6.3f}  in bar {in_bar(r.samples).float().mean():.3f}  "
          f"acceptance at t=3,2,1: {acc[-3]:.2f} {acc[-2]:.2f} {acc[-1]:.2f}")
