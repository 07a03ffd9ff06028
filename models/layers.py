"""Layers whose bias + activation is a single `kernels.bias_act` call, so the fused kernel does that work.

Each fused layer carries its kernel choice in ``self.impl`` ("auto" | "triton" | "ref"; see
models.set_kernel_impl), so the choice travels with the model instead of living in process-wide state.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..kernels import bias_act


class FusedLinear(nn.Module):
    """y = act(x @ W^T + b): the matmul without bias, then one fused bias+activation.

    With ``norm=True`` a BatchNorm1d sits between the matmul and the activation and its shift is the bias.
    """

    def __init__(self, in_features, out_features, act="linear", alpha=0.2, bias=True, norm=False, impl="auto"):
        super().__init__()
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = nn.BatchNorm1d(out_features) if norm else None
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias and not norm else None
        self.act, self.alpha = act, alpha
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        x = F.linear(x, self.weight)
        if self.norm is not None:
            x = self.norm(x)
        return bias_act(x, self.bias, act=self.act, alpha=self.alpha, impl=self.impl)

    def extra_repr(self):
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.act}"


class FusedConv2d(nn.Module):
    """Conv2d (or its transpose, for upsampling) without bias, then one fused bias+activation.

    With ``norm=True`` a BatchNorm sits between the convolution and the activation; its affine shift serves
    as the bias, so the fused op applies the activation alone.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, act="linear", alpha=0.2,
                 transposed=False, norm=False, impl="auto"):
        super().__init__()
        self.impl = impl
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv_cls(in_ch, out_ch, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_ch) if norm else None
        self.bias = None if norm else nn.Parameter(torch.zeros(out_ch))
        self.act, self.alpha = act, alpha
        nn.init.normal_(self.conv.weight, 0.0, 0.02)  # DCGAN initialisation

    def forward(self, x):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return bias_act(x, self.bias, act=self.act, alpha=self.alpha, impl=self.impl)
