"""LoRA-RITE's stacked block state: per-parameter state entries are views of per-block stacks.

The fast path (stacks reused between steps, tall moments double-buffered) must give exactly the trajectory
of rebuilding the stacks from the entries at every step (what ``load_state_dict`` forces), including when
the set of pairs with gradients changes between steps, after a skipped step, and when a user replaces an
entry. (The values themselves are anchored by ``test_parity.py`` against pytorch-optimizer.)
"""

from __future__ import annotations

import copy

import torch

from tests.optim.toys import LoRAMLP, flat, regression_data
from trustlab.optim import LoRARITE


def _grads(model, data):
    x, y = data
    for p in model.parameters():
        p.grad = None
    ((model(x) - y) ** 2).mean().backward()


def _run(restack: bool, schedule: list[str], seed: int = 0) -> tuple[torch.Tensor, LoRARITE]:
    """Train with a per-step schedule: "all" (both pairs), "fc1" (fc2 has no gradient) or "nan" (skipped)."""
    model, data = LoRAMLP(seed=seed), regression_data()
    opt = LoRARITE(model.pairs(), lr=0.02, apply_escape=True)
    for what in schedule:
        _grads(model, data)
        if what == "fc1":
            for p in model.fc2.values():
                p.grad = None
        if what == "nan":
            model.fc1["lora_A"].grad[0, 0] = float("nan")
        if restack:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # fresh tensors: the stacks are rebuilt
        opt.step()
    return flat(model.parameters()), opt


def test_reused_stacks_equal_restacking_every_step():
    schedule = ["all", "all", "fc1", "all", "nan", "all", "fc1", "fc1", "all", "all"]
    fast, opt = _run(False, schedule)
    slow, _ = _run(True, schedule)
    assert torch.equal(fast, slow)
    assert opt.skipped_steps == 1
    # the skipped step changed nothing: dropping it from the schedule gives the same parameters
    assert torch.equal(fast, _run(False, [s for s in schedule if s != "nan"])[0])


def test_state_entries_are_live_views_and_replacements_are_honoured():
    model, data = LoRAMLP(), regression_data()
    opt = LoRARITE(model.pairs(), lr=0.02)
    for _ in range(3):
        _grads(model, data)
        opt.step()
    st = opt.state[model.fc1["lora_B"]]
    v_before = st["exp_avg_sq"].clone()
    kept = st["exp_avg_sq"]
    _grads(model, data)
    opt.step()
    assert st["exp_avg_sq"] is kept and not torch.equal(kept, v_before)  # updated in place, like AdamW
    # held outside the state: a spare first moment, a spare factor copy and the gradient stack (float64 here)
    assert opt.buffer_bytes == 3 * 8 * sum(p.numel() for p in model.parameters() if p.requires_grad)

    # a replaced entry is read at the next step (the stacks are rebuilt), here a reset first moment
    twin = copy.deepcopy(model)
    twin_opt = LoRARITE(twin.pairs(), lr=0.02)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for m, o in ((model, opt), (twin, twin_opt)):
        s = o.state[m.fc2["lora_A"]]
        s["exp_avg"] = torch.zeros_like(s["exp_avg"])
    twin_opt.load_state_dict(copy.deepcopy(twin_opt.state_dict()))
    for m, o in ((model, opt), (twin, twin_opt)):
        _grads(m, data)
        o.step()
    assert torch.equal(flat(model.parameters()), flat(twin.parameters()))


def test_second_moment_algebra_needs_float64():
    """The check behind keeping the ``r x r`` algebra in float64 (a float32 version would save ~1 ms of ~40).

    On a second moment with condition number 1e5 (SmolLM2's rank-16 moments reach 1.5e5), a float32 inverse
    root is off by far more than the 2e-4 that float32 parameters keep against float64 ones (test_basis).
    """
    from trustlab.optim.rite_math import inverse_root

    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(8, 16, 16, generator=g, dtype=torch.float64))[0]
    w = torch.logspace(-9, -4, 16, dtype=torch.float64)  # gradient-sized eigenvalues, kappa 1e5
    v = (q * w) @ q.mT
    rho = torch.zeros(8, dtype=torch.float64)
    exact = (q / (w.sqrt() + 1e-6)) @ q.mT

    def rel(x: torch.Tensor) -> float:
        return (torch.linalg.matrix_norm(x.double() - exact, ord=2) / torch.linalg.matrix_norm(exact, ord=2)).max().item()

    assert rel(inverse_root(v, rho, 1e-6)) < 1e-9
    assert rel(inverse_root(v.float(), rho.float(), 1e-6)) > 2e-4
