r"""A tabular autoregressive policy over short sequences, small enough to enumerate.

The policy keeps one logit vector per prefix: a table ``[num_nodes, V]`` indexed by the
nodes of the complete ``V``-ary tree of depth ``T`` in heap order (the root, the empty
prefix, is node 0; the prefix ``h`` followed by token ``y`` is node ``V * h + 1 + y``), so

.. math:: \pi(y_{1:T}) = \prod_t \mathrm{softmax}(\theta_{h_t})_{y_t},
          \qquad h_1 = 0,\ h_{t+1} = V h_t + 1 + y_t,
          \qquad \text{num\_nodes} = (V^T - 1) / (V - 1).

It can represent every distribution over ``V**T`` sequences, which is what makes the
sequence-level gradient audit and the toy GRPO study exact: every expectation over
sequences is a finite sum (``V**T <= 1024`` for ``V <= 4``, ``T <= 5``).

An optional end-of-sequence token ends a sequence: positions after the first
``eos_token`` are masked. Enumeration still lists all ``V**T`` token arrays; each masked
position is given probability ``1/V`` (independent of the parameters), so the
weights of the arrays that share a valid part add up to that sequence's probability.
"""

from jaxkl._src.rl.tabular import (
    enumerate_sequences,
    eos_mask,
    init_logits,
    num_nodes,
    prefix_nodes,
    sample,
    sequence_kl,
    sequence_weights,
    token_logprobs,
    tree_shape,
)

__all__ = [
    "enumerate_sequences",
    "eos_mask",
    "init_logits",
    "num_nodes",
    "prefix_nodes",
    "sample",
    "sequence_kl",
    "sequence_weights",
    "token_logprobs",
    "tree_shape",
]
