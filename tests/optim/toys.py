"""Small LoRA problems shared by the optimizer tests (float64 where exactness matters)."""

from __future__ import annotations

import torch
from torch import nn

from trustlab.optim import LoRAPair, find_lora_pairs


class LoRAMLP(nn.Module):
    """A frozen 2-layer MLP with PEFT-named LoRA factors (``lora_A`` (r, in), ``lora_B`` (out, r))."""

    def __init__(self, d_in: int = 8, d_hidden: int = 16, d_out: int = 4, r: int = 2, seed: int = 0,
                 b_zero: bool = False, dtype: torch.dtype = torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(d_hidden, d_in, generator=g, dtype=dtype) / d_in**0.5, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(d_out, d_hidden, generator=g, dtype=dtype) / d_hidden**0.5,
                               requires_grad=False)
        self.fc1 = nn.ParameterDict({
            "lora_A": nn.Parameter(torch.randn(r, d_in, generator=g, dtype=dtype) * 0.3),
            "lora_B": nn.Parameter(torch.zeros(d_hidden, r, dtype=dtype) if b_zero
                                   else torch.randn(d_hidden, r, generator=g, dtype=dtype) * 0.3)})
        self.fc2 = nn.ParameterDict({
            "lora_A": nn.Parameter(torch.randn(r, d_hidden, generator=g, dtype=dtype) * 0.3),
            "lora_B": nn.Parameter(torch.zeros(d_out, r, dtype=dtype) if b_zero
                                   else torch.randn(d_out, r, generator=g, dtype=dtype) * 0.3)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ (self.w1 + self.fc1["lora_B"] @ self.fc1["lora_A"]).T)
        return h @ (self.w2 + self.fc2["lora_B"] @ self.fc2["lora_A"]).T

    def pairs(self) -> list[LoRAPair]:
        return find_lora_pairs(self)[0]


def regression_data(n: int = 64, d_in: int = 8, d_out: int = 4, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    y = torch.sin(x @ torch.randn(d_in, d_out, generator=g, dtype=dtype))
    return x, y


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])
