"""LoRA-RITE behaviour: pairing by name, cold start, bad input, companion groups, other layouts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.optim.toys import LoRAMLP, flat, regression_data
from trustlab.optim import LoRAPair, LoRAPairError, LoRARITE, create_lora_rite_optimizer, find_lora_pairs


def _step(model, opt, data=None):
    x, y = data or regression_data()
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()


def _state_snapshot(opt):
    return copy.deepcopy({id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                          for p, s in opt.state.items()})


def test_cold_start_only_lora_B_moves_first():
    model = LoRAMLP(b_zero=True)
    pairs = model.pairs()
    opt = LoRARITE(pairs, lr=0.02)
    a0 = [p.lora_A.detach().clone() for p in pairs]
    _step(model, opt)
    for p, a in zip(pairs, a0, strict=True):
        assert torch.equal(p.lora_A, a)  # R of lora_B is 0 -> its pseudo-inverse is 0 -> no lora_A step
        assert p.lora_B.abs().sum() > 0
    _step(model, opt)
    assert all(not torch.equal(p.lora_A, a) for p, a in zip(pairs, a0, strict=True))
    assert torch.isfinite(flat(model.parameters())).all()


def test_pairs_by_name_not_by_order():
    model = LoRAMLP()
    named = list(model.named_parameters())
    pairs, others = find_lora_pairs(reversed(named))
    assert {p.name for p in pairs} == {"fc1", "fc2"} and others == []  # frozen weights are not "others"
    for p in pairs:
        assert p.lora_A is dict(named)[f"{p.name}.lora_A"] and p.lora_B is dict(named)[f"{p.name}.lora_B"]


def test_peft_model_pairs_and_conv_layers():
    import peft
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).double()
    model = peft.get_peft_model(net, peft.LoraConfig(r=2, target_modules=["0", "2"]))
    pairs, others = find_lora_pairs(model)
    assert len(pairs) == 2 and others == []
    opt = create_lora_rite_optimizer(model, lr=1e-2)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    conv_b = next(p for n, p in model.named_parameters() if "0.lora_B" in n)
    assert conv_b.shape[1] == 2 and conv_b.abs().sum() > 0  # (out, r, 1, 1): rank axis 1


def test_no_lora_parameters_is_a_clear_error():
    with pytest.raises(LoRAPairError, match="no trainable LoRA pairs"):
        create_lora_rite_optimizer(nn.Linear(4, 4))
    with pytest.raises(LoRAPairError, match="no LoRA pairs"):
        LoRARITE([])


def test_flat_parameter_list_is_rejected():
    with pytest.raises(LoRAPairError, match="not a flat list"):
        LoRARITE(list(LoRAMLP().parameters()))


def test_mismatched_pair_shapes():
    with pytest.raises(LoRAPairError, match="mismatched pair shapes"):
        LoRAPair(nn.Parameter(torch.randn(2, 8)), nn.Parameter(torch.randn(8, 3)), name="bad")
    with pytest.raises(LoRAPairError, match="exceeds"):
        LoRAPair(nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(8, 6)))
    with pytest.raises(LoRAPairError, match="no partner"):
        find_lora_pairs([("m.lora_A.default.weight", nn.Parameter(torch.randn(2, 4)))])


def test_non_lora_parameters_companion_or_error():
    model = LoRAMLP()
    model.head = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(LoRAPairError, match="non-LoRA"):
        create_lora_rite_optimizer(model, non_lora="error")
    opt = create_lora_rite_optimizer(model, lr=1e-2, non_lora="adamw")
    assert [g["lora"] for g in opt.param_groups] == [True, False]
    x, y = regression_data()
    opt.zero_grad()
    ((model(x) + model.head - y) ** 2).mean().backward()
    opt.step()
    assert model.head.abs().sum() > 0  # AdamW moved it
    assert len(create_lora_rite_optimizer(model, non_lora="ignore").param_groups) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_skips_step_and_keeps_state(bad):
    model = LoRAMLP()
    opt = LoRARITE(model.pairs(), lr=0.02)
    _step(model, opt)
    params, state = flat(model.parameters()).clone(), _state_snapshot(opt)
    x, y = regression_data()
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    model.fc2["lora_A"].grad[0, 0] = bad
    opt.step()
    assert opt.skipped_steps == 1
    assert torch.equal(flat(model.parameters()), params)
    after = _state_snapshot(opt)
    for pid, st in state.items():
        for k, v in st.items():
            assert torch.equal(after[pid][k], v), k
    _step(model, opt)  # the next clean step runs normally
    assert not torch.equal(flat(model.parameters()), params) and opt.skipped_steps == 1


def test_rank_deficient_factors_stay_finite():
    model = LoRAMLP(r=3)
    with torch.no_grad():
        model.fc1["lora_A"][2] = model.fc1["lora_A"][0] * 2  # rank 2 < r = 3
        model.fc2["lora_B"][:, 1:] = 0  # rank 1
    opt = LoRARITE(model.pairs(), lr=0.02)
    for _ in range(5):
        _step(model, opt)
    assert torch.isfinite(flat(model.parameters())).all() and opt.skipped_steps == 0
    assert all(torch.isfinite(v).all() for s in opt.state.values() for v in s.values())


def test_missing_gradient_pair_is_left_alone():
    model = LoRAMLP()
    opt = LoRARITE(model.pairs(), lr=0.02)
    before = flat(model.fc2.parameters()).clone()
    x, _ = regression_data()
    opt.zero_grad()
    (x @ (model.fc1["lora_B"] @ model.fc1["lora_A"]).T).square().mean().backward()
    opt.step()
    assert torch.equal(flat(model.fc2.parameters()), before)
    assert all(len(opt.state[p]) == 0 for p in model.fc2.parameters())


def test_bfloat16_parameters_use_float32_state():
    model = LoRAMLP(dtype=torch.bfloat16)
    opt = LoRARITE(model.pairs(), lr=0.02)
    for _ in range(3):
        _step(model, opt, regression_data(dtype=torch.bfloat16))
    st = opt.state[model.fc1["lora_A"]]
    assert st["exp_avg"].dtype == torch.float32 and st["exp_avg_sq"].dtype == torch.float64
    assert torch.isfinite(flat(model.parameters()).float()).all()


def test_hyperparameter_validation():
    pairs = LoRAMLP().pairs()
    with pytest.raises(ValueError, match="lr"):
        LoRARITE(pairs, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        LoRARITE(pairs, betas=(0.9, 1.0))


def test_update_skipping_is_counted():
    a, b = nn.Parameter(torch.randn(4, 32)), nn.Parameter(torch.zeros(16, 4))
    opt = LoRARITE([(a, b)], lr=1e-2)
    (100 * b @ a).sum().backward()  # a large summed loss: unmagnified RMS far above the threshold 1.0
    opt.step()
    assert opt.skipped_updates >= 1 and opt.skipped_steps == 0
