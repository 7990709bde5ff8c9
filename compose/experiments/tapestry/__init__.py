"""The image tapestry on the 8×8 digits (the paper's section 5.4; docs/windows.md).

One class-conditional diffusion model of the 8×8 digits, trained here with a null class for
classifier-free guidance as a diffusers ``UNet2DModel`` with class embeddings, saved with
``save_pretrained`` and loaded back through the diffusers adapter (the path a user's pretrained
model takes), paints canvases of 1×8×W made of overlapping 8×8 windows, each asking for its own
digit d_i with guidance scale w:

    π_t(x) = Π_i p_t(x[W_i] | d_i)^w / p_t(x[W_i] | ∅)^(w−1)

(canvas "3 7": 1×8×14, windows at columns 0:8 and 6:14, overlapping by 2; canvas "2 5 9":
1×8×20, windows at 0:8, 6:14 and 12:20). Samplers, all with the reverse step after the MCMC
steps at each level, as in the paper's image experiments:

    Reverse      the ancestral reverse process with the composed score
    U-LA         K unadjusted Langevin steps per level
    LA-3-line    K MALA steps per level, Δ on the line with 3 interior points
    HMC-curve    K_hmc HMC steps of L leapfrog steps, Δ along the leapfrog path (no extra points)

LA and HMC step sizes η_t = a · β_tᵇ come from `compose.tuning.tune_step_size` on the first
canvas; U-LA reuses LA's. The guidance scale w is picked once by a small search with the reverse
process (the best mean per-window accuracy; ties within 0.02 go to the lower FD) and then used
by every sampler.

Metrics per window, from the window's 8×8 crop clipped to [−1, 1]: accuracy of the digits
experiment's evaluation classifier for the requested digit (probability ≥ 0.5); and per run the
Fréchet distance between the evaluation classifier's features of all crops and of the held-out
images of the requested digits. Mean ± std over sampling seeds.

    settings   `Settings`, the full run (`DEFAULT`) and the test run (`QUICK`)
    canvas     window geometry, the composition of a canvas, crops
    model      training the class-conditional UNet2DModel, save_pretrained, loading it back
    run        scale search, step sizes, sampling and scoring every canvas, the experiment
    report     summaries over seeds, results.md, the figure of canvases
    command    ``compose experiment tapestry`` and ``python -m compose.experiments.tapestry``
"""
from .canvas import canvas_shape, crops, tapestry, window_starts
from .command import main, register
from .model import LevelIndexed, train_or_load_model
from .report import canvas_figure, results_markdown, summarise
from .run import run_canvas, run_experiment, sampler_specs, search_scale, tune
from .settings import DEFAULT, NULL_CLASS, QUICK, SAMPLER_NAMES, Settings

__all__ = [
    "canvas_shape", "crops", "tapestry", "window_starts", "main", "register", "LevelIndexed",
    "train_or_load_model", "canvas_figure", "results_markdown", "summarise", "run_canvas",
    "run_experiment", "sampler_specs", "search_scale", "tune", "DEFAULT", "NULL_CLASS", "QUICK",
    "SAMPLER_NAMES", "Settings",
]
