"""DPO-Diff search: GPO (gradient, shortcut text gradient), EPO (evolutionary), hybrid, random search.

All searches share one :class:`Evaluator`: a genome's loss is the faithfulness loss of fully generated
images averaged over seeds, computed once per genome (a visited genome is never re-evaluated) and counted
against the budget. The sign makes every search a minimisation: enhancement minimises the spherical CLIP
distance to the user prompt, the attack minimises its negative.

References:
    Ruochen Wang, Ting Liu, Cho-Jui Hsieh, Boqing Gong. "On Discrete Prompt Optimization for
    Diffusion Models." ICML 2024. arXiv:2407.01606.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trustlab.prompting.dpo_diff import DiffusionAdapter, DPODiffError, RelaxedPrompt, gumbel_softmax_weights
from trustlab.prompting.dpo_diff_space import SearchSpace
from trustlab.report.run import progress

ALGOS = ("gpo", "epo", "hybrid", "random")


def step_schedule(spec: str, iters: int, seed: int = 0) -> list[int]:
    """Sampler step index per GPO iteration.

    ``"step-15-2"``: ``15 + i // 2``; ``"fixed-20"``: always 20; ``"random-10-30"``: uniform in [10, 30].

    Example:
        >>> step_schedule("step-15-2", 5)
        [15, 15, 16, 16, 17]
    """
    m = re.fullmatch(r"(step|fixed|random)-(\d+)(?:-(\d+))?", spec.strip())
    if not m or (m[1] != "fixed" and m[3] is None):
        raise DPODiffError(f"bad step schedule {spec!r}; use 'step-15-2', 'fixed-20' or 'random-10-30'")
    a = int(m[2])
    if m[1] == "fixed":
        return [a] * iters
    b = int(m[3])
    if m[1] == "step":
        return [a + i // max(b, 1) for i in range(iters)]
    return np.random.default_rng(seed).integers(a, b + 1, size=iters).tolist()


@dataclass
class Evaluator:
    """Scores genomes by full generations; caches, counts and traces.

    Args:
        relaxed: the space bound to a pipeline adapter.
        loss_fn: images ``(B, C, H, W)`` in [0, 1] -> per-image loss ``(B,)`` (e.g. ``ClipLoss`` with the
            user prompt's text features bound in).
        sign: +1 to minimise the loss (enhance), -1 to maximise it (attack).
        seeds: noise seeds every genome is generated with.

    Attributes:
        cache: genome -> signed mean loss. trace: ``(evaluations so far, best signed loss)`` after each one.
    """

    relaxed: RelaxedPrompt
    loss_fn: Callable[[torch.Tensor], torch.Tensor]
    sign: float = 1.0
    seeds: Sequence[int] = (0, 1)
    cache: dict[tuple[int, ...], float] = field(default_factory=dict)
    trace: list[tuple[int, float]] = field(default_factory=list)

    @torch.no_grad()
    def __call__(self, genome: Sequence[int]) -> float:
        """Signed mean loss of ``genome`` (evaluated once; later calls read the cache)."""
        g = self.relaxed.space.check(genome)
        if g not in self.cache:
            cond, uncond = self.relaxed.embed(self.relaxed.one_hot(g))
            adapter = self.relaxed.adapter
            losses = self.loss_fn(adapter.denoise(cond, uncond, tuple(self.seeds)))  # one batch of all seeds
            self.cache[g] = self.sign * float(losses.mean())
            best = min(self.cache.values())
            self.trace.append((len(self.cache), best))
        return self.cache[g]

    @property
    def best(self) -> tuple[tuple[int, ...], float]:
        """The best genome seen and its signed loss."""
        g = min(self.cache, key=self.cache.get)
        return g, self.cache[g]


def gpo(relaxed: RelaxedPrompt, loss_fn: Callable[[torch.Tensor], torch.Tensor], *, sign: float = 1.0,
        seeds: Sequence[int] = (0, 1), iters: int = 20, schedule: str = "step-15-2", lr: float = 0.1,
        momentum: float = 0.5, clip: float = 0.025, max_alpha: float = 3.0, tau: float = 1.0, seed: int = 0,
        grad_from: str = "shortcut") -> tuple[list[torch.Tensor], list[float]]:
    """Gradient prompt optimisation: learn slot logits ``alpha`` with the shortcut text gradient.

    Each iteration draws soft Gumbel-softmax weights, embeds the relaxed prompt, runs the sampler without
    gradients down to the scheduled step, differentiates one guided UNet call through ``x0_hat`` and the
    loss (averaged over seeds), clips the gradient to ``+-clip``, takes an RMSprop step and clamps alpha to
    ``[0, max_alpha]``.

    Args:
        relaxed: the space bound to an adapter.
        loss_fn: images -> per-image loss.
        sign: +1 enhance (minimise), -1 attack (maximise).
        seeds, iters, schedule, lr, momentum, clip, max_alpha, tau: as in the paper (section 3, defaults).
        seed: the Gumbel noise seed.
        grad_from: ``"shortcut"`` (one UNet call with gradients) or ``"full"`` (backprop through every step
            down to the scheduled one; the costly baseline).

    Returns:
        The learned alphas (one tensor per slot) and the relaxed loss per iteration (signed).

    Example:
        >>> alphas, losses = gpo(RelaxedPrompt(adapter, space), lambda im: loss(im, text), iters=4,
        ...                      schedule="step-5-2")
    """
    if grad_from not in ("shortcut", "full"):
        raise DPODiffError(f"grad_from must be 'shortcut' or 'full', not {grad_from!r}")
    steps = step_schedule(schedule, iters, seed)
    alphas = [torch.zeros(n) for n in relaxed.space.sizes]
    for a in alphas:
        a[0] = 1.0
        a.requires_grad_(True)
    opt = torch.optim.RMSprop(alphas, lr=lr, alpha=0.99, eps=1e-8, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for t in progress(steps, "DPO-Diff GPO"):
        opt.zero_grad()
        total = 0.0
        for s in seeds:
            w = [gumbel_softmax_weights(a, tau, gen) for a in alphas]
            loss = sign * relaxed_loss(relaxed, w, loss_fn, s, t, full=grad_from == "full") / len(seeds)
            loss.backward()
            total += float(loss.detach())
        with torch.no_grad():
            for a in alphas:
                a.grad.clamp_(-clip, clip)
        opt.step()
        with torch.no_grad():
            for a in alphas:
                a.clamp_(0.0, max_alpha)
        losses.append(total)
    return [a.detach() for a in alphas], losses


def relaxed_loss(relaxed: RelaxedPrompt, weights: Sequence[torch.Tensor], loss_fn: Callable[[torch.Tensor],
                 torch.Tensor], seed: int, t: int, *, full: bool = False) -> torch.Tensor:
    """Loss of ``x0_hat`` at step index ``t`` for slot weights (differentiable in the weights).

    ``full=False`` is the shortcut text gradient (gradients through the step-``t`` UNet call only);
    ``full=True`` tracks gradients through every sampler step before it as well.
    """
    cond, uncond = relaxed.embed(weights)
    images = relaxed.adapter.denoise(cond, uncond, seed, stop=t, grad_from=0 if full else t)
    return loss_fn(images).mean()


def sample_genomes(alphas: Sequence[torch.Tensor], n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``n`` genomes drawn from ``Categorical(softmax(alpha))`` per slot."""
    probs = [torch.softmax(a.double(), -1).numpy() for a in alphas]
    return [tuple(int(rng.choice(len(p), p=p / p.sum())) for p in probs) for _ in range(n)]


def _fresh(make: Callable[[], tuple[int, ...]], seen: set, tries: int = 50) -> tuple[int, ...] | None:
    """A genome from ``make`` not in ``seen`` (resampling up to ``tries`` times), or None."""
    for _ in range(tries):
        g = make()
        if g not in seen:
            return g
    return None


def epo(evaluate: Evaluator, *, budget: int = 40, population: int = 20, keep: int = 10, mutations: int = 10,
        crossovers: int = 10, p_mutate: float = 0.1, seed: int = 0, alphas: Sequence[torch.Tensor] | None = None,
        explore: float = 0.0) -> tuple[tuple[int, ...], float]:
    """Evolutionary prompt optimisation over genomes (one option index per slot).

    The first population is uniform; given ``alphas`` (hybrid) its first individual is ``argmax(alpha)``
    and the rest are drawn from ``softmax(alpha)``, each replaced by a uniform draw with probability
    ``explore`` (0 = the paper's intent; 1 = the released code's behaviour, kept for parity). Then: keep
    the top ``keep``, add ``mutations`` children (each gene resampled with ``p_mutate``) and ``crossovers``
    uniform crossovers of two parents; visited genomes are resampled. Stops after ``budget`` distinct
    evaluations or when the space is exhausted.

    Returns:
        The best genome and its signed loss.

    Example:
        >>> best, loss = epo(Evaluator(relaxed, lambda im: loss(im, text)), budget=16)
    """
    space = evaluate.relaxed.space
    if budget < 1:
        raise DPODiffError(f"the evaluation budget must be >= 1, got {budget}")
    rng = np.random.default_rng(seed)
    sizes = space.sizes
    start = len(evaluate.cache)
    budget = min(budget, space.size - start)

    def spent() -> int:
        return len(evaluate.cache) - start

    def uniform() -> tuple[int, ...]:
        return tuple(int(rng.integers(n)) for n in sizes)

    def initial(k: int) -> tuple[int, ...]:
        if alphas is None or rng.random() < explore:
            return uniform()
        if k == 0:
            return tuple(int(a.argmax()) for a in alphas)
        return sample_genomes(alphas, 1, rng)[0]

    def run(genome: tuple[int, ...] | None) -> None:
        if genome is not None and spent() < budget:
            evaluate(genome)

    for k in range(population):
        run(_fresh(lambda k=k: initial(k), set(evaluate.cache)))

    def mutate(ranked: list[tuple[int, ...]]) -> tuple[int, ...]:
        parent = ranked[int(rng.integers(len(ranked)))]
        return tuple(int(rng.integers(n)) if rng.random() < p_mutate else g for g, n in zip(parent, sizes))

    def cross(ranked: list[tuple[int, ...]]) -> tuple[int, ...]:
        a, b = (ranked[int(i)] for i in rng.integers(len(ranked), size=2))
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

    while spent() < budget:
        before = spent()
        ranked = sorted(evaluate.cache, key=evaluate.cache.get)[:keep]
        for make in [mutate] * mutations + [cross] * crossovers:
            run(_fresh(lambda m=make, r=ranked: m(r), set(evaluate.cache)))
        if spent() == before:  # the neighbourhood is exhausted: spend the rest uniformly
            run(_fresh(uniform, set(evaluate.cache), tries=1000))
            if spent() == before:
                break
    return evaluate.best


def random_search(evaluate: Evaluator, *, budget: int = 40, seed: int = 0) -> tuple[tuple[int, ...], float]:
    """Baseline: ``budget`` distinct uniform genomes; the best one and its signed loss."""
    rng = np.random.default_rng(seed)
    start = len(evaluate.cache)
    budget = min(budget, evaluate.relaxed.space.size - start)
    while len(evaluate.cache) - start < budget:
        g = _fresh(lambda: tuple(int(rng.integers(n)) for n in evaluate.relaxed.space.sizes), set(evaluate.cache),
                   tries=1000)
        if g is None:
            break
        evaluate(g)
    return evaluate.best


class DPODiff:
    """DPO-Diff on one user prompt: search a space for the prompt that best enhances (or attacks)
    faithfulness of the generated images to the user prompt.

    Args:
        adapter: a :class:`~trustlab.prompting.dpo_diff.DiffusionAdapter` (or a diffusers pipeline).
        loss: a ``ClipLoss``-like callable ``(images, text_emb) -> (B,)`` with ``text_features(str)``.
        space: the :class:`~trustlab.prompting.dpo_diff_space.SearchSpace`.
        algo: ``"hybrid"`` (GPO then EPO from alpha), ``"gpo"`` (GPO then sampling from alpha), ``"epo"``,
            or ``"random"``.
        direction: ``"enhance"`` or ``"attack"`` (default: attack for synonym spaces, else enhance).
        seeds: noise seeds averaged per evaluation.
        schedule, iters: GPO step schedule and iterations.
        budget: full-generation evaluations (40 for EPO / GPO decoding, 32 in hybrid in the paper).
        explore: EPO's uniform-draw probability in the hybrid's first population (0; 1 = released code).
        grad_from: GPO's gradient: ``"shortcut"`` (one UNet call) or ``"full"`` (backprop through the sampler
            steps before it; the costly baseline).
        seed: randomness of the search.

    Example:
        >>> out = DPODiff(adapter, loss, space, algo="hybrid", schedule="step-5-2", iters=6, budget=8).search()
        >>> out["negative_prompt"], out["loss"]
    """

    def __init__(self, adapter: Any, loss: Any, space: SearchSpace, *, algo: str = "hybrid",
                 direction: str | None = None, seeds: Sequence[int] = (0, 1), schedule: str = "step-15-2",
                 iters: int = 20, budget: int = 32, explore: float = 0.0, grad_from: str = "shortcut",
                 seed: int = 0):
        if algo not in ALGOS:
            raise DPODiffError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
        direction = direction or ("attack" if space.kind == "synonym" else "enhance")
        if direction not in ("enhance", "attack"):
            raise DPODiffError(f"direction must be 'enhance' or 'attack', not {direction!r}")
        if not seeds:
            raise DPODiffError("give at least one noise seed")
        self.adapter = adapter if isinstance(adapter, DiffusionAdapter) else DiffusionAdapter(adapter)
        self.relaxed = RelaxedPrompt(self.adapter, space)
        text = loss.text_features(space.user_prompt)
        self.loss_fn = lambda images: loss(images, text)
        self.sign = 1.0 if direction == "enhance" else -1.0
        self.algo, self.direction, self.seeds = algo, direction, tuple(seeds)
        if grad_from not in ("shortcut", "full"):
            raise DPODiffError(f"grad_from must be 'shortcut' or 'full', not {grad_from!r}")
        self.schedule, self.iters, self.budget, self.explore, self.seed = schedule, iters, budget, explore, seed
        self.grad_from = grad_from

    def search(self) -> dict[str, Any]:
        """Run the search; returns ``prompt``, ``negative_prompt``, ``genome``, ``loss`` (unsigned mean loss of
        the best genome), ``user_loss`` (of the user prompt, genome 0), ``evaluations`` and ``trace``."""
        ev = Evaluator(self.relaxed, self.loss_fn, self.sign, self.seeds)
        space = self.relaxed.space
        user = (0,) * len(space.slots)
        alphas, gpo_losses = None, []
        if self.algo in ("gpo", "hybrid"):
            alphas, gpo_losses = gpo(self.relaxed, self.loss_fn, sign=self.sign, seeds=self.seeds, iters=self.iters,
                                     schedule=self.schedule, seed=self.seed, grad_from=self.grad_from)
        if self.algo == "gpo":
            rng = np.random.default_rng(self.seed)
            seen: set = set()
            for _ in range(50 * self.budget):
                if len(seen) >= min(self.budget, space.size):
                    break
                g = sample_genomes(alphas, 1, rng)[0]
                if g not in seen:
                    seen.add(g)
                    ev(g)
        elif self.algo == "random":
            random_search(ev, budget=self.budget, seed=self.seed)
        else:
            epo(ev, budget=self.budget, seed=self.seed, alphas=alphas if self.algo == "hybrid" else None,
                explore=self.explore)
        best, signed = ev.best
        evaluations = len(ev.cache)
        user_loss = ev(user) * self.sign  # outside the budget when the search did not visit it
        prompt, negative = space.prompts(best)
        return {"prompt": prompt, "negative_prompt": negative, "genome": list(best), "loss": signed * self.sign,
                "user_loss": user_loss, "evaluations": evaluations, "trace": ev.trace, "gpo_losses": gpo_losses,
                "alphas": [a.tolist() for a in alphas] if alphas is not None else None}
