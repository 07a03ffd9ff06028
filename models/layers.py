"""Layers whose bias + activation is a single `kernels.bias_act` call, so the fused kernel does that work.

Beside its forward each layer has the two halves of an explicit input gradient (used by the critics for
gradient penalties without double backward): ``forward_with_slope`` also returns the activation's slope per
element (1, alpha, 0 where ReLU is off or the clamp is active), and ``input_grad`` maps an upstream gradient to
the layer's input with first-order ops (matmul by W, transposed convolution), differentiable in the weights.
That is exact for piecewise-linear activations, whose slope has zero derivative almost everywhere;
``supports_input_grad`` says whether the layer qualifies (no BatchNorm, a piecewise-linear activation).

Any fused layer can normalise its weight spectrally (``enable_spectral_norm``, Miyato et al. 2018): every use of
the weight then uses W / sigma(W), the same in the forward and in the explicit input gradient, so that gradient
stays exact and weight gradients flow through sigma.

Each fused layer carries its kernel choice in ``self.impl`` ("auto" | "triton" | "ref"; see
models.set_kernel_impl), so the choice travels with the model instead of living in process-wide state.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..kernels import ACTIVATION_TABLE, activation_slope, bias_act


def _slope(y, z, bias, act, alpha):
    """The activation's slope per element of the layer's output.

    Read off the output y where the table allows it (one pass, no bias add; relu and lrelu with alpha > 0 have
    y > 0 exactly where z + bias > 0); otherwise computed at z + bias as bias_act does it (bias cast to z's
    dtype, the sum in fp32, or fp64 for fp64), so the slope's kinks fall exactly where the forward's do."""
    spec = ACTIVATION_TABLE[act]
    with torch.no_grad():
        if spec.slope_from_output is not None and (act != "lrelu" or alpha > 0):
            return spec.slope_from_output(y.detach(), alpha)
        acc = torch.float64 if z.dtype == torch.float64 else torch.float32
        pre = z.detach().to(acc)
        if bias is not None:
            pre = pre + bias.detach().to(z.dtype).to(acc).reshape([1, -1] + [1] * (z.dim() - 2))
        return activation_slope(pre, act, alpha).to(z.dtype)


class SpectralNorm(nn.Module):
    """sigma(W), the largest singular value of a weight viewed as a matrix, by power iteration.

    The matrix is W with its output dimension first, flattened (a convolution's (out, in, kh, kw) as
    (out, in*kh*kw); a transposed convolution's (in, out, kh, kw) with its dims 0 and 1 swapped first, as
    torch.nn.utils.spectral_norm does). The singular vectors u (rows) and v (columns) live in buffers, so they
    travel with the module's state_dict and checkpoints. ``power_iteration_`` refines them in place (no host
    read: it runs inside a captured CUDA graph); ``sigma`` is u^T W v with u and v held constant, differentiable
    in W. The steps call power_iteration_ once per D step, before D's forwards.
    """

    def __init__(self, weight, output_dim=0, warmup_iterations=15):
        super().__init__()
        self.output_dim = output_dim
        rows, cols = self.matrix(weight).shape
        self.register_buffer("u", F.normalize(torch.randn(rows, dtype=weight.dtype), dim=0, eps=1e-12))
        self.register_buffer("v", F.normalize(torch.randn(cols, dtype=weight.dtype), dim=0, eps=1e-12))
        for _ in range(warmup_iterations):  # start near the top singular pair, not at a random direction
            self.power_iteration_(weight)

    def matrix(self, weight):
        if self.output_dim:
            weight = weight.transpose(0, self.output_dim)
        return weight.flatten(1)

    @torch.no_grad()
    def power_iteration_(self, weight):
        w = self.matrix(weight.detach()).to(self.u.dtype)
        self.v.copy_(F.normalize(w.t() @ self.u, dim=0, eps=1e-12))
        self.u.copy_(F.normalize(w @ self.v, dim=0, eps=1e-12))

    def sigma(self, weight):
        # sum_ij W_ij u_i v_j as an elementwise product and a sum: autocast leaves those in W's dtype (fp32),
        # where a matrix-vector product would run in bf16
        u, v = self.u.to(weight.dtype), self.v.to(weight.dtype)
        return (self.matrix(weight) * torch.outer(u, v)).sum()

    def normalized(self, weight):
        return weight / self.sigma(weight)


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
        self.spectral = None  # a SpectralNorm after enable_spectral_norm()
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def enable_spectral_norm(self):
        self.spectral = SpectralNorm(self.weight.detach())
        return self

    def effective_weight(self):
        """The weight every use reads: W, or W / sigma(W) with spectral normalisation."""
        return self.weight if self.spectral is None else self.spectral.normalized(self.weight)

    def power_iteration_(self):
        self.spectral.power_iteration_(self.weight)

    def forward(self, x):
        x = F.linear(x, self.effective_weight())
        if self.norm is not None:
            x = self.norm(x)
        return bias_act(x, self.bias, act=self.act, alpha=self.alpha, impl=self.impl)

    def supports_input_grad(self):
        return self.norm is None and ACTIVATION_TABLE[self.act].piecewise_linear

    def forward_with_slope(self, x):
        """(y, slope): the forward and d act / d pre-activation per output element (no graph on the slope)."""
        z = F.linear(x, self.effective_weight())
        y = bias_act(z, self.bias, act=self.act, alpha=self.alpha, impl=self.impl)
        return y, _slope(y, z, self.bias, self.act, self.alpha)

    def input_grad(self, grad_out, slope, input_shape=None):
        """d/dx of <grad_out, y> given forward_with_slope's slope: (grad_out * slope) @ W."""
        return F.linear(grad_out * slope, self.effective_weight().t())

    def extra_repr(self):
        sn = ", spectral_norm" if self.spectral is not None else ""
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.act}{sn}"


class FusedConv2d(nn.Module):
    """Conv2d (or its transpose, for upsampling) without bias, then one fused bias+activation.

    With ``norm=True`` a BatchNorm sits between the convolution and the activation; its affine shift serves
    as the bias, so the fused op applies the activation alone.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, act="linear", alpha=0.2,
                 transposed=False, norm=False, impl="auto"):
        super().__init__()
        self.impl = impl
        self.transposed = transposed
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv_cls(in_ch, out_ch, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_ch) if norm else None
        self.bias = None if norm else nn.Parameter(torch.zeros(out_ch))
        self.act, self.alpha = act, alpha
        self.spectral = None  # a SpectralNorm after enable_spectral_norm()
        nn.init.normal_(self.conv.weight, 0.0, 0.02)  # DCGAN initialisation

    def enable_spectral_norm(self):
        # a transposed convolution's weight is (in, out, kh, kw): its output dimension is 1
        self.spectral = SpectralNorm(self.conv.weight.detach(), output_dim=1 if self.transposed else 0)
        return self

    def effective_weight(self):
        """The weight every use reads: W, or W / sigma(W) with spectral normalisation."""
        weight = self.conv.weight
        return weight if self.spectral is None else self.spectral.normalized(weight)

    def power_iteration_(self):
        self.spectral.power_iteration_(self.conv.weight)

    def convolve(self, x):
        """The convolution (or its transpose) with the effective weight, no bias."""
        conv = self.conv
        if self.spectral is None:
            return conv(x)
        if self.transposed:
            return F.conv_transpose2d(x, self.effective_weight(), None, conv.stride, conv.padding,
                                      conv.output_padding, conv.groups, conv.dilation)
        return F.conv2d(x, self.effective_weight(), None, conv.stride, conv.padding, conv.dilation, conv.groups)

    def forward(self, x):
        x = self.convolve(x)
        if self.norm is not None:
            x = self.norm(x)
        return bias_act(x, self.bias, act=self.act, alpha=self.alpha, impl=self.impl)

    def supports_input_grad(self):
        return (self.norm is None and ACTIVATION_TABLE[self.act].piecewise_linear
                and self.conv.padding_mode == "zeros" and not isinstance(self.conv.padding, str))

    def forward_with_slope(self, x):
        """(y, slope): the forward and d act / d pre-activation per output element (no graph on the slope)."""
        z = self.convolve(x)
        y = bias_act(z, self.bias, act=self.act, alpha=self.alpha, impl=self.impl)
        return y, _slope(y, z, self.bias, self.act, self.alpha)

    def input_grad(self, grad_out, slope, input_shape):
        """d/dx of <grad_out, y> given forward_with_slope's slope and x's shape: the convolution's transpose
        (a transposed convolution for a convolution, a convolution for a transposed one) of grad_out * slope."""
        conv, g, weight = self.conv, grad_out * slope, self.effective_weight()
        if self.transposed:
            return F.conv2d(g, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        # The rows and columns a strided convolution skipped at the far edge come back as output padding.
        output_padding = tuple(
            size - ((out - 1) * stride - 2 * pad + dil * (k - 1) + 1)
            for size, out, stride, pad, dil, k in zip(input_shape[-2:], g.shape[-2:], conv.stride, conv.padding,
                                                       conv.dilation, conv.kernel_size))
        return F.conv_transpose2d(g, weight, None, conv.stride, conv.padding, output_padding, conv.groups,
                                  conv.dilation)
