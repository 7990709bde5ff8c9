"""Plans: the evaluation counts and call shapes a plan states are the calls the component
networks receive during a real `compose.sample` run (docs/delta.md, docs/sampler.md section 4)."""
import json
from collections import Counter

import pytest
import torch
from torch import nn

import compose

T, K, N = 10, 2, 4


class Recorder(nn.Module):
    """Wraps a network; records the row count of every call."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.rows = []

    def forward(self, x, t, **conditions):
        assert t.shape == (x.shape[0],)
        self.rows.append(x.shape[0])
        return self.net(x, t, **conditions)


class Linear(nn.Module):
    def __init__(self, out, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.Linear(2, out).double()

    def forward(self, x, t):
        return self.layer(x)


class Setup:
    """sc (score-only, analytic ε) · box (analytic) · e ** 0.5 (energy) | class=1 @ 2, with every
    component's computation recorded; `calls[label]` is the list of rows per call."""

    def __init__(self, chunk_rows=None, path="line", points=0, exact_only=False):
        s = compose.Schedule.cosine(T)
        ring = compose.GaussianMixture([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5]], 0.3, schedule=s)
        self.sc = compose.ScoreModel.from_analytic(ring, name="sc")
        self.sc.net = Recorder(self.sc.net)
        self.box = compose.UniformBox([-1.0, -1.0], [1.0, 1.0], schedule=s, name="box")
        self.box_rows = []
        exact = self.box._exact

        def recorded(x, t):
            self.box_rows.append(x.shape[0])
            return exact(x, t)
        self.box._exact = recorded
        self.e = compose.EnergyModel(Recorder(Linear(2, 0)), s, name="e", event_shape=(2,))
        self.clf = compose.Classifier(Recorder(Linear(3, 1)), s, name="clf", event_shape=(2,))
        expr = self.box * self.e ** 0.5 if exact_only else self.sc * self.box * self.e ** 0.5
        expr = expr.guide(self.clf.condition(1), scale=2.0)
        self.target = compose.compile(expr, path=path, points=points, chunk_rows=chunk_rows)

    @property
    def calls(self):
        out = {"box": self.box_rows, "e": self.e.net.rows, "clf[class=1]": self.clf.net.rows}
        if "sc" in self.target.labels():
            out["sc"] = self.sc.net.rows
        return out

    def clear(self):
        for rows in self.calls.values():
            rows.clear()


def _kernel(name):
    return {
        "ULA": lambda: compose.ULA(1e-3),
        "MALA": lambda: compose.MALA(1e-3),
        "HMC": lambda: compose.HMC(0.03, num_leapfrog=3),
        "U-HMC": lambda: compose.HMC(0.03, num_leapfrog=3, adjusted=False),
        "RWMH": lambda: compose.RandomWalkMH(0.05),
        "Reverse": lambda: None,
    }[name]()


def _shapes(plan, label, per):
    """{rows: calls} the plan states for one term, per "per_step" or "per_level"."""
    term = next(t for t in plan.terms if t.label == label)
    out = Counter()
    for call in term.calls:
        assert call.shape[1:] == (2,)
        out[call.shape[0]] += getattr(call, per)
    return out


SAMPLERS = [  # (name, kernel, path, points)
    ("ULA", "ULA", "line", 0),
    ("LA-0-line", "MALA", "line", 0),
    ("LA-1-line", "MALA", "line", 1),
    ("LA-3-line", "MALA", "line", 3),
    ("U-HMC", "U-HMC", "line", 2),        # unadjusted: the points are never needed
    ("HMC-1-line", "HMC", "line", 1),
    ("HMC-3-line", "HMC", "line", 3),
    ("HMC-curve", "HMC", "curve", 0),
    ("HMC-1-curve", "HMC", "curve", 1),
    ("RWMH-2-line", "RWMH", "line", 2),
]


def _check_run(setup, kernel, reverse_step):
    target = setup.target
    plan = target.plan_for(kernel, K, N, reverse_step)
    setup.clear()
    target.counter.reset()
    result = compose.sample(target, kernel, N, steps_per_level=K, reverse_step=reverse_step,
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                            progress=False)
    per_sample = result.diagnostics.evaluations_per_sample()
    for label, rows in setup.calls.items():
        term = next(t for t in plan.terms if t.label == label)
        # evaluations per sample: rows seen by the network over the run, per chain
        assert sum(rows) == N * term.per_sample, label
        assert target.counter.rows[label] == N * term.per_sample, label
        assert per_sample[label] == term.per_sample, label
        # batch shapes: every call, counted by its rows
        expected = Counter({r: T * c for r, c in _shapes(plan, label, "per_level").items()})
        assert Counter(rows) == expected, label
    assert sum(t.per_sample for t in plan.terms) == plan.totals["per_sample"]
    return plan


def _check_step(setup, kernel):
    """One MCMC step at a middle level: the plan's per-step evaluations and calls."""
    target = setup.target
    plan = target.plan_for(kernel, K, N)
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    state = kernel.init(target, x, 5, g)
    setup.clear()
    kernel.step(target, state, 5, 1e-3, g)
    for label, rows in setup.calls.items():
        term = next(t for t in plan.terms if t.label == label)
        assert sum(rows) == N * term.per_step, label
        assert Counter(rows) == _shapes(plan, label, "per_step"), label


@pytest.mark.parametrize("name, kernel_name, path, points", SAMPLERS, ids=[s[0] for s in SAMPLERS])
@pytest.mark.parametrize("reverse_step", [False, True])
def test_plan_counts_match_network_calls(name, kernel_name, path, points, reverse_step):
    setup = Setup(path=path, points=points)
    kernel = _kernel(kernel_name)
    plan = _check_run(setup, kernel, reverse_step)
    _check_step(setup, kernel)
    # exact terms never pay for integration points
    adjusted = kernel_name not in ("ULA", "U-HMC")
    L = 3 if "HMC" in kernel_name else 1
    extra = points * (L if path == "curve" and kernel_name == "HMC" else 1) if adjusted else 0
    terms = {t.label: t for t in plan.terms}
    assert terms["sc"].per_step == L + extra
    for label in ("box", "e", "clf[class=1]"):
        assert terms[label].per_step == L
        assert [c.what for c in terms[label].calls] == ["chain points"]


@pytest.mark.parametrize("reverse_step", [False, True])
def test_plan_counts_match_network_calls_for_the_reverse_process(reverse_step):
    setup = Setup()
    if not reverse_step:
        with pytest.raises(ValueError, match="reverse_step=True"):
            setup.target.plan_for(None, K, N, reverse_step)
        return
    plan = _check_run(setup, None, True)
    assert {t.label: t.per_sample for t in plan.terms} == {
        "sc": T, "box": T, "e": T, "clf[class=1]": T}


def test_known_costs_of_the_paper_samplers():
    """Evaluations of the score-only term per sample (docs/sampler.md §4, docs/experiments.md)."""
    setup = Setup(points=3)
    target = setup.target

    def per_sample(kernel, k=10, target=target, reverse=False):
        plan = target.plan_for(kernel, k, 2000, reverse)
        return next(t for t in plan.terms if t.label == "sc").per_sample

    assert per_sample(None, reverse=True) == T                                  # Reverse
    assert per_sample(compose.ULA(1e-3)) == T * 10                              # U-LA
    assert per_sample(compose.MALA(1e-3)) == T * (1 + 10 * (1 + 3))             # LA-3-line
    assert per_sample(compose.HMC(0.03, 3, adjusted=False)) == T * (1 + 10 * 3)  # U-HMC
    assert per_sample(compose.HMC(0.03, 3)) == T * (1 + 10 * (3 + 3))           # HMC-3-line
    curve = Setup(path="curve").target
    assert per_sample(compose.HMC(0.03, 3), target=curve) == T * (1 + 10 * 3)   # HMC-curve
    # the reverse step reuses the kernel's last score, except after ULA
    assert per_sample(compose.MALA(1e-3), reverse=True) == per_sample(compose.MALA(1e-3))
    assert per_sample(compose.ULA(1e-3), reverse=True) == T * 11


@pytest.mark.parametrize("kernel_name, path, points", [("MALA", "line", 3), ("HMC", "curve", 1),
                                                       ("HMC", "line", 2), ("RWMH", "line", 8)])
def test_an_exact_composition_needs_no_extra_evaluations(kernel_name, path, points):
    setup = Setup(path=path, points=points, exact_only=True)
    kernel = _kernel(kernel_name)
    plan = _check_run(setup, kernel, False)
    _check_step(setup, kernel)
    L = 3 if kernel_name == "HMC" else 1
    for term in plan.terms:
        assert term.per_step == L and term.per_sample == T * (1 + K * L)


@pytest.mark.parametrize("kernel_name, path, points", [("MALA", "line", 3), ("HMC", "curve", 1),
                                                       ("ULA", "line", 0)])
@pytest.mark.parametrize("chunk_rows", [3, 4, 100])
def test_chunked_calls_match_the_plan(kernel_name, path, points, chunk_rows):
    setup = Setup(chunk_rows=chunk_rows, path=path, points=points)
    kernel = _kernel(kernel_name)
    plan = _check_run(setup, kernel, True)
    _check_step(setup, kernel)
    sc = next(t for t in plan.terms if t.label == "sc")
    assert max(c.shape[0] for c in sc.calls) <= chunk_rows
    # exact terms are never split
    box = next(t for t in plan.terms if t.label == "box")
    assert [c.shape for c in box.calls] == [(N, 2)]


def test_integration_points_are_one_batched_call_per_step_on_accelerators():
    setup = Setup(path="curve", points=2)
    plan = setup.target.plan_for(compose.HMC(0.03, num_leapfrog=3), K, N, device="cuda")
    sc = next(t for t in plan.terms if t.label == "sc")
    assert [(c.what, c.shape, c.per_step, c.per_level) for c in sc.calls] == [
        ("chain points", (N, 2), 3, 1 + 3 * K),
        ("integration points", (2 * 3 * N, 2), 1, K)]


def test_integration_points_are_one_call_per_point_on_the_cpu():
    # Batching measured 0.56-0.6x as fast on a 2-core CPU (benchmarks/bench_core.py).
    setup = Setup(path="curve", points=2)
    plan = setup.target.plan_for(compose.HMC(0.03, num_leapfrog=3), K, N)
    sc = next(t for t in plan.terms if t.label == "sc")
    assert [(c.what, c.shape, c.per_step, c.per_level) for c in sc.calls] == [
        ("chain points", (N, 2), 3, 1 + 3 * K),
        ("integration points", (N, 2), 2 * 3, 2 * 3 * K)]


def test_plan_prints_as_a_tree():
    setup = Setup(chunk_rows=8, path="curve", points=1)
    s = setup.sc.schedule
    g = compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=s, name="g")
    h = compose.GaussianMixture([[1.0, 0.0]], 0.5, schedule=s, name="h")
    expr = compose.parse("sc * box ** 0.5 / e * (g + h) | class=1 @ 2",
                         {"sc": setup.sc, "box": setup.box, "e": setup.e, "g": g, "h": h,
                          "class": setup.clf})
    target = compose.compile(expr, path="curve", points=1, chunk_rows=8)
    plan = target.plan_for(compose.HMC(0.03, num_leapfrog=3), steps_per_level=2, num_samples=4)
    assert str(plan) == """\
plan for sc * box ** 0.5 / e * (g + h) | class=1 @ 2
  schedule cosine, T = 10 levels, event shape (2,)
  sampler HMC: 2 steps per level of 3 leapfrog steps, no reverse step, 4 chains
  network evaluations per chain, all terms: 21 per MCMC step, 48 per level, 480 per sample
  network calls of the whole run (each on a batch of chains): 20 per MCMC step, 46 per level, 460 in all
  score-only calls split into chunks of at most 8 rows
  ├─ sc  weight 1  [score model]
  │     Δ: integral along the leapfrog path, trapezoid rule, 1 extra point per segment, leapfrog scores reused
  │     evaluations per chain: 6 per MCMC step, 13 per level, 130 per sample
  │     call (4, 2) at chain points: 3 per step, 7 per level
  │     call (8, 2) at integration points: 1 per step, 2 per level
  │     call (4, 2) at integration points: 1 per step, 2 per level
  ├─ box  weight 0.5  [analytic]
  │     Δ: exact, difference of analytic log-densities
  │     evaluations per chain: 3 per MCMC step, 7 per level, 70 per sample
  │     call (4, 2) at chain points: 3 per step, 7 per level
  ├─ e  weight -1  [energy model]
  │     Δ: exact, energy difference
  │     evaluations per chain: 3 per MCMC step, 7 per level, 70 per sample
  │     call (4, 2) at chain points: 3 per step, 7 per level
  ├─ mixture(g + h)  weight 1  [mixture]
  │  │  Δ: exact, difference of logsumexp over the branches
  │  ├─ g  weight 1  [analytic]
  │  │     Δ: exact, difference of analytic log-densities
  │  │     evaluations per chain: 3 per MCMC step, 7 per level, 70 per sample
  │  │     call (4, 2) at chain points: 3 per step, 7 per level
  │  └─ h  weight 1  [analytic]
  │        Δ: exact, difference of analytic log-densities
  │        evaluations per chain: 3 per MCMC step, 7 per level, 70 per sample
  │        call (4, 2) at chain points: 3 per step, 7 per level
  └─ clf[class=1]  weight 2  [classifier]
        Δ: exact, difference of classifier log-probabilities
        evaluations per chain: 3 per MCMC step, 7 per level, 70 per sample
        call (4, 2) at chain points: 3 per step, 7 per level"""
    # without a kernel: terms and methods only
    assert str(target.plan).splitlines()[:3] == [
        "plan for sc * box ** 0.5 / e * (g + h) | class=1 @ 2",
        "  schedule cosine, T = 10 levels, event shape (2,)",
        "  score-only calls split into chunks of at most 8 rows"]


def test_unadjusted_plans_say_that_delta_is_never_computed():
    setup = Setup(points=3)
    text = str(setup.target.plan_for(compose.ULA(1e-3), K, N, True))
    assert "  Δ is never computed: ULA has no accept/reject step" in text.splitlines()
    assert "sampler ULA: 2 steps per level, reverse step after each level, 4 chains" in text
    reverse = str(setup.target.plan_for(None, K, N, True)).splitlines()
    assert reverse[2] == "  sampler Reverse: reverse process only, 4 chains"
    assert reverse[4] == "  network evaluations per chain, all terms: 4 per level, 40 per sample"


@pytest.mark.parametrize("kernel", [None, "ULA", "HMC"])          # (MALA refuses a curve target)
def test_plan_to_dict_is_json(kernel):
    setup = Setup(chunk_rows=3, path="curve", points=1)
    if kernel is None:
        plan = setup.target.plan
    else:
        plan = setup.target.plan_for(_kernel(kernel), K, N, True)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["expression"] == "sc * box * e ** 0.5 | class=1 @ 2"
    assert data["event_shape"] == [2] and data["T"] == T
    assert [t["label"] for t in data["terms"]] == ["sc", "box", "e", "clf[class=1]"]
    assert [t["weight"] for t in data["terms"]] == [1.0, 1.0, 0.5, 2.0]
    if kernel is None:
        assert data["kernel"] is None and data["terms"][0]["per_sample"] is None
    else:
        assert data["kernel"]["name"] == kernel
        assert data["totals"]["per_sample"] == sum(t["per_sample"] for t in data["terms"])
        assert data["terms"][0]["calls"][0] == {"what": "chain points", "shape": [3, 2],
                                                "per_step": plan.terms[0].calls[0].per_step,
                                                "per_level": plan.terms[0].calls[0].per_level}


def test_sampling_builds_no_autograd_graph():
    """A network whose parameters require grad must not chain a graph through the run (it did:
    11 GB and 4× the time for 300 evaluations of the 2D MLP at 2000 chains)."""
    s = compose.Schedule.cosine(T)
    net = Linear(2, 0)
    assert all(p.requires_grad for p in net.parameters())
    target = compose.compile(compose.ScoreModel(net, s, name="p", event_shape=(2,)), points=1)
    for kernel in (compose.MALA(1e-3), compose.HMC(0.03), compose.ULA(1e-3)):
        out = compose.sample(target, kernel, N, steps_per_level=K, reverse_step=True,
                             dtype=torch.float64, progress=False).samples
        assert not out.requires_grad and out.grad_fn is None
    kernel = compose.MALA(1e-3).at_level(target, 3)
    kernel.setup(0)
    x = kernel.sample({"x": torch.zeros(N, 2, dtype=torch.float64)})["x"]
    assert not kernel.sample({"x": x})["x"].requires_grad
