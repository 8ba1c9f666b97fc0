"""The shared optimizer test battery: every LoRA optimizer goes through the same checks.

Adding an optimizer is one line in ``OPTIMIZERS``: a name and a factory that takes param groups given
as lists of :class:`LoRAPair` plus one learning rate per group.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from tests.optim.toys import LoRAMLP, flat, regression_data
from trustlab.optim import LoRARITE


def _lora_rite(**kw):
    return lambda groups, lrs: LoRARITE([{"pairs": g, "lr": lr} for g, lr in zip(groups, lrs, strict=True)], **kw)


def _adamw(groups, lrs):
    return torch.optim.AdamW([{"params": [t for p in g for t in (p.lora_A, p.lora_B)], "lr": lr}
                              for g, lr in zip(groups, lrs, strict=True)], weight_decay=0.0)


OPTIMIZERS = {
    "lora-rite": _lora_rite(),
    "lora-rite-escape-cap": _lora_rite(apply_escape=True, update_capping=0.5),
    "lora-rite-wd-balance": _lora_rite(weight_decay=0.01, balance_param=True),
    "lora-rite-no-clip-skip": _lora_rite(update_skipping=0.0, clip_unmagnified_grad=0.0),
    "adamw": _adamw,  # the reference the battery itself is checked against
}
LR = 0.02


def _train(model, opt, steps, data):
    x, y = data
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(params=list(OPTIMIZERS), name="make")
def _make(request):
    return OPTIMIZERS[request.param]


def test_reduces_loss(make):
    model = LoRAMLP()
    losses = _train(model, make([model.pairs()], [LR]), 60, regression_data())
    assert losses[-1] < 0.7 * losses[0]


def test_state_dict_round_trip(make):
    data = regression_data()
    model = LoRAMLP()
    opt = make([model.pairs()], [LR])
    _train(model, opt, 5, data)
    buf = io.BytesIO()
    torch.save({"model": copy.deepcopy(model.state_dict()), "opt": opt.state_dict()}, buf)
    _train(model, opt, 5, data)
    expected = flat(model.parameters())

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model2 = LoRAMLP(seed=7)
    model2.load_state_dict(saved["model"])
    opt2 = make([model2.pairs()], [LR])
    opt2.load_state_dict(saved["opt"])
    _train(model2, opt2, 5, data)
    torch.testing.assert_close(flat(model2.parameters()), expected, rtol=0, atol=1e-13)


def test_per_group_learning_rates(make):
    model = LoRAMLP()
    pairs = model.pairs()
    before = (pairs[1].lora_B @ pairs[1].lora_A).detach().clone()
    _train(model, make([pairs[:1], pairs[1:]], [LR, 0.0]), 3, regression_data())
    # the lr-0 group's adapter does not change (balance_param may rescale its factors, not their product)
    torch.testing.assert_close(pairs[1].lora_B @ pairs[1].lora_A, before, rtol=0, atol=1e-12)
    assert not torch.equal(flat([pairs[0].lora_B]), LoRAMLP().pairs()[0].lora_B.detach())


def test_no_gradients_is_a_no_op(make):
    model = LoRAMLP()
    opt = make([model.pairs()], [LR])
    before = flat(model.parameters())
    opt.step()
    assert torch.equal(flat(model.parameters()), before)


def test_closure_and_scheduler(make):
    model = LoRAMLP()
    opt = make([model.pairs()], [LR])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    x, y = regression_data()

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    sched.step()
    assert torch.is_tensor(loss) and opt.param_groups[0]["lr"] == pytest.approx(LR / 2)


def test_deterministic(make):
    runs = []
    for _ in range(2):
        model = LoRAMLP()
        _train(model, make([model.pairs()], [LR]), 5, regression_data())
        runs.append(flat(model.parameters()))
    assert torch.equal(runs[0], runs[1])


def test_float32_parameters(make):
    model = LoRAMLP(dtype=torch.float32)
    losses = _train(model, make([model.pairs()], [LR]), 30, regression_data(dtype=torch.float32))
    assert all(map(torch.isfinite, map(torch.tensor, losses))) and losses[-1] < losses[0]
