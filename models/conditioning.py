"""How a conditional model reads its condition: a class index, or a vector of binary attributes.

A class y picks one row of an embedding table, e(y) = E[y]. K binary attributes a in {-1, 1}^K (CelebA's
Smiling, Male, ...) are the multi-label form of the same thing: e(a) = a @ W, each attribute's row added when
the attribute is on and subtracted when it is off. G concatenates e(a) to z; D adds the projection <e(a), h(x)>
to its logit (Miyato & Koyama 2018), so D's score reads sum_k a_k <w_k, h(x)>, one learned term per attribute.
Values between -1 and 1 (or beyond) are accepted, as a linear map takes any vector; training sees only -1 and 1.

A generator conditioned on attributes also keeps a bank of the attribute vectors it trained on (rows of its
training set, in its state_dict, so checkpoints carry it): sampling without attribute settings draws whole
vectors from it, so the attributes keep their real correlations (few bearded faces wear lipstick).
"""
import math

import torch
from torch import nn

BANK_ROWS = 4096  # attribute vectors kept for sampling: enough to carry the joint distribution of 40 attributes


class AttributeEmbedding(nn.Module):
    """e(a) = a @ W for attribute vectors a (N, K): (N, dim). ``names``: the K attributes, in column order.
    ``bank``: also hold BANK_ROWS attribute vectors (int8 -1/1) to draw from (a generator's embedding does)."""

    def __init__(self, names, dim, bank=False):
        super().__init__()
        if not names:
            raise ValueError("an attribute embedding needs at least one attribute name")
        self.names = tuple(names)
        # rows N(0, 1/K): the sum over K signed attributes has the unit variance of a class embedding's row
        self.weight = nn.Parameter(torch.randn(len(self.names), dim) / math.sqrt(len(self.names)))
        if bank:
            self.register_buffer("bank", torch.ones(BANK_ROWS, len(self.names), dtype=torch.int8))

    def forward(self, attributes):
        return attributes.to(self.weight.dtype) @ self.weight

    def extra_repr(self):
        return f"attributes={len(self.names)}, dim={self.weight.shape[1]}"


def condition_embedding(num_classes, attribute_names, dim, bank=False):
    """The embedding of a model's condition: a class table, an attribute map, or None (unconditional)."""
    if num_classes and attribute_names:
        raise ValueError("a model is conditioned on classes or on attributes, not both")
    if attribute_names:
        return AttributeEmbedding(attribute_names, dim, bank)
    return nn.Embedding(num_classes, dim) if num_classes else None


def attribute_embedding(G):
    """The attribute embedding of generator ``G`` that holds the bank, or None when G is not attribute-conditioned."""
    return next((m for m in G.modules() if isinstance(m, AttributeEmbedding) and hasattr(m, "bank")), None)


@torch.no_grad()
def set_attribute_bank(G, attributes, seed=0):
    """Fill G's bank with BANK_ROWS rows of ``attributes`` (N, K) of -1/1, drawn with replacement (seeded)."""
    embedding = attribute_embedding(G)
    rows = torch.randint(0, attributes.shape[0], (BANK_ROWS,), generator=torch.Generator().manual_seed(seed))
    embedding.bank.copy_(attributes[rows].to(torch.int8))


def draw_attributes(G, n, generator=None):
    """``n`` attribute vectors (float32 (n, K), on the bank's device) drawn from G's bank with ``generator`` (which
    must live on that device)."""
    bank = attribute_embedding(G).bank
    rows = torch.randint(0, bank.shape[0], (n,), device=bank.device, generator=generator)
    return bank.index_select(0, rows).float()
