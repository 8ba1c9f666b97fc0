"""Our TracIn core vs dattri's ``TracInAttributor`` on a small classifier: the same scores, and the time.

Setup: an MLP 64 -> 256 -> 256 -> 10 (tanh, 85k parameters) trained with SGD (lr 0.05, batch 100) on
1,000 scikit-learn digits for 5 epochs, a checkpoint after each, weight c_k = lr for both sides. Scores:
the 100 x 1,000 influence matrix of 100 held-out digits, cross-entropy loss, all parameters, float32, CPU.

* Exact mode (the headline): dattri 0.3.0 always projects by default (its class-level
  ``DEFAULT_PROJECTOR_KWARGS`` is never None), so its ``projector_kwargs`` is set to None after
  construction: its exact mode. Ours: ``TracIn(...).cache(train)`` then ``.attribute(test)``, in memory.
  Both are timed end to end (every gradient included), alternating, ``--repeats`` times; the headline is
  the median. dattri recomputes the test gradients for every train batch; ours computes each gradient once.
* Parity: Pearson correlation of the two score matrices (target >= 0.99) and the largest absolute
  difference, plus each one's correlation with a direct per-example autograd computation.
* Projected mode (details only, timed once): both with a 512-dim random projection (different random
  matrices, so each is compared with the exact scores, not with the other).

Usage: ``python benchmarks/tracin_dattri.py [--repeats 3] [--threads N] [--out results/benchmarks/tracin_dattri.json]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from trustlab.attribution import Checkpoint, RandomProjector, TracIn
from trustlab.report import BenchmarkRecord, machine_info, write_benchmark

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "tracin_dattri.json"
CE = torch.nn.functional.cross_entropy
LR, BATCH, EPOCHS, N_TRAIN, N_TEST, PROJ = 0.05, 100, 5, 1000, 100, 512


def setup() -> tuple[torch.nn.Module, list[Checkpoint], tuple, tuple]:
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x = torch.from_numpy(d.data[perm].astype(np.float32) / 16.0)
    y = torch.from_numpy(d.target[perm]).long()
    train, test = (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:N_TRAIN + N_TEST], y[N_TRAIN:N_TRAIN + N_TEST])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256), torch.nn.Tanh(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    ckpts = []
    for _ in range(EPOCHS):
        for lo in range(0, N_TRAIN, BATCH):
            opt.zero_grad()
            CE(model(train[0][lo:lo + BATCH]), train[1][lo:lo + BATCH]).backward()
            opt.step()
        ckpts.append(Checkpoint({k: v.detach().clone() for k, v in model.state_dict().items()}, weight=LR))
    return model, ckpts, train, test


def direct(model: torch.nn.Module, ckpts: list[Checkpoint], train: tuple, test: tuple) -> torch.Tensor:
    """sum_k c_k <g_k(z), g_k(z')> with one autograd call per example (the reference)."""
    def grads(state: dict, data: tuple) -> torch.Tensor:
        model.load_state_dict(state)
        rows = []
        for x, y in zip(*data):
            model.zero_grad()
            CE(model(x[None]), y[None]).backward()
            rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        return torch.stack(rows)

    return sum(c.weight * grads(c.state, test) @ grads(c.state, train).T for c in ckpts)


def run_ours(model, ckpts, train, test, projector=None) -> torch.Tensor:
    t = TracIn(model, CE, ckpts, device="cpu", batch_size=BATCH, shard_size=N_TRAIN, projector=projector)
    t.cache(train)
    return t.attribute(test)


def run_dattri(model, ckpts, train, test, project: bool) -> torch.Tensor:
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    def loss(params, data):
        x, y = data
        return CE(torch.func.functional_call(model, params, x.unsqueeze(0)), y.unsqueeze(0))

    task = AttributionTask(loss_func=loss, model=model, checkpoints=[c.state for c in ckpts])
    att = TracInAttributor(task, weight_list=torch.tensor([c.weight for c in ckpts]), normalized_grad=False,
                           device="cpu", projector_kwargs={"proj_dim": PROJ, "proj_max_batch_size": 32, "proj_seed": 0,
                                                           "device": "cpu"} if project else None)
    if not project:
        att.projector_kwargs = None  # dattri's exact mode (see the module docstring)
    loader = lambda d: DataLoader(TensorDataset(*d), batch_size=BATCH, shuffle=False)  # noqa: E731
    return att.attribute(loader(train), loader(test)).T  # dattri: (n_train, n_test)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # dattri's per-batch progress bars
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model, ckpts, train, test = setup()
    n_params = sum(p.numel() for p in model.parameters())
    reference = direct(model, ckpts, train, test)
    times: dict[str, list[float]] = {"ours": [], "dattri": [], "ours_projected": [], "dattri_projected": []}
    scores: dict[str, torch.Tensor] = {}
    projector = RandomProjector(n_params, PROJ, seed=0)
    arms = {"ours": lambda: run_ours(model, ckpts, train, test), "dattri": lambda: run_dattri(model, ckpts, train,
                                                                                                test, False),
            "ours_projected": lambda: run_ours(model, ckpts, train, test, projector),
            "dattri_projected": lambda: run_dattri(model, ckpts, train, test, True)}
    small = (train[0][:BATCH], train[1][:BATCH])
    run_ours(model, ckpts, small, test)  # warm-up of both (imports, first vmap calls)
    run_dattri(model, ckpts, small, test, False)
    for r in range(args.repeats):
        exact = ["ours", "dattri"] if r % 2 == 0 else ["dattri", "ours"]
        for name in exact + (["ours_projected", "dattri_projected"] if r == 0 else []):  # projected: once
            t0 = time.perf_counter()
            scores[name] = arms[name]()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if len(v) > r), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    parity = corr(scores["ours"], scores["dattri"])
    details = {
        "model": f"MLP 64-256-256-10 tanh, {n_params} parameters, SGD lr {LR} batch {BATCH}, {EPOCHS} epochs",
        "data": f"scikit-learn digits: {N_TRAIN} train x {N_TEST} test", "checkpoints": EPOCHS, "weights": LR,
        "loss": "cross-entropy", "dtype": "float32", "device": "cpu", "repeats": args.repeats,
        "statistic": "median of alternating repeats", "seconds": times,
        "parity": {"pearson_ours_vs_dattri": parity, "target": 0.99, "meets_target": parity >= 0.99,
                   "max_abs_diff": float((scores["ours"] - scores["dattri"]).abs().max()),
                   "max_abs_score": float(reference.abs().max()),
                   "pearson_ours_vs_direct": corr(scores["ours"], reference),
                   "pearson_dattri_vs_direct": corr(scores["dattri"], reference)},
        "projected": {"dim": PROJ, "seconds_median": {k: med[k] for k in ("ours_projected", "dattri_projected")},
                      "pearson_vs_exact": {k: corr(scores[k], reference) for k in ("ours_projected", "dattri_projected")},
                      "note": "ours: seeded Gaussian (RandomProjector), norms kept in full space; dattri: its "
                              "random_project (proj_dim 512, seed 0); different matrices"},
        "dattri_exact_mode": "projector_kwargs set to None after construction (dattri 0.3.0 always projects by "
                             "default)",
        "load_average": {"start": load_start, "end": os.getloadavg()}, "threads": torch.get_num_threads(),
    }
    import dattri

    machine = {**machine_info(), "dattri": getattr(dattri, "__version__", "0.3.0")}
    records = [
        BenchmarkRecord(measure=f"seconds for the exact TracIn score matrix ({N_TEST} x {N_TRAIN} digits, {EPOCHS} "
                                "checkpoints, MLP 85k parameters)", ours=med["ours"], peer=med["dattri"],
                        peer_name="dattri 0.3.0 TracInAttributor (exact mode)", lower_is_better=True, target=1.0,
                        machine=machine, details=details),
        BenchmarkRecord(measure="Pearson correlation of the TracIn scores with dattri's (exact mode)", ours=parity,
                        peer=1.0, peer_name="dattri 0.3.0 TracInAttributor (itself)", lower_is_better=False,
                        target=0.99, machine=machine, details={"max_abs_diff": details["parity"]["max_abs_diff"]}),
    ]
    print(f"exact: ours {med['ours']:.2f} s vs dattri {med['dattri']:.2f} s (ratio {records[0].ratio:.3f}, target 1.0); "
          f"correlation {parity:.6f} (target 0.99); projected: ours {med['ours_projected']:.2f} s, dattri "
          f"{med['dattri_projected']:.2f} s")
    print(f"wrote {write_benchmark(args.out, records)}")


if __name__ == "__main__":
    main()
