"""Implementation of :mod:`jaxkl.rl.tabular` (its module docstring has the overview)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxkl._src.validation import check_float_array, check_positive_int, compute_dtype

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def num_nodes(vocab_size: int, length: int) -> int:
    r"""Number of prefixes (tree nodes) of a policy over ``length`` tokens: ``sum_t V**t``.

    .. math:: \text{num\_nodes} = \sum_{t=0}^{T-1} V^t = (V^T - 1) / (V - 1).

    Args:
      vocab_size: ``V``, a positive int.
      length: ``T``, a positive int.

    Returns:
      A Python int. Raises ``TypeError``/``ValueError`` for a non-positive or non-integer
      argument.

    Example:
      >>> from jaxkl.rl import tabular
      >>> tabular.num_nodes(2, 3)  # 1 + 2 + 4
      7
    """
    vocab_size = check_positive_int(vocab_size, "vocab_size")
    length = check_positive_int(length, "length")
    return sum(vocab_size**t for t in range(length))


def tree_shape(logits: ArrayLike) -> tuple[int, int]:
    """``(vocab_size, length)`` of a logit table ``[num_nodes, V]``; raises if not a tree.

    Args:
      logits: a table of shape ``[num_nodes(V, T), V]`` with ``V >= 2`` (only the shape
        is read).

    Returns:
      ``(V, T)``. Raises ``ValueError`` when the shape is not that of a tree.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.rl import tabular
      >>> tabular.tree_shape(jnp.zeros((7, 2)))
      (2, 3)
      >>> tabular.tree_shape(jnp.zeros((5, 2)))
      Traceback (most recent call last):
        ...
      ValueError: The logit table has 5 rows, which is not (V**T - 1) / (V - 1) ...
    """
    shape = np.shape(logits)
    if len(shape) != 2 or shape[1] < 2:
        raise ValueError(
            f"A tabular policy's logits must have shape [num_nodes, vocab_size >= 2], got {shape}."
        )
    vocab_size, nodes, length = shape[1], 0, 0
    while nodes < shape[0]:
        nodes += vocab_size**length
        length += 1
    if nodes != shape[0]:
        raise ValueError(
            f"The logit table has {shape[0]} rows, which is not (V**T - 1) / (V - 1) for "
            f"V = {vocab_size} and any length T."
        )
    return vocab_size, length


def init_logits(vocab_size: int, length: int, dtype: jax.typing.DTypeLike = jnp.float32) -> Array:
    """The uniform policy: a zero table ``[num_nodes(V, T), V]``.

    Example:
      >>> from jaxkl.rl import tabular
      >>> tabular.init_logits(2, 3).shape, tabular.init_logits(2, 3).dtype
      ((7, 2), dtype('float32'))
    """
    return jnp.zeros((num_nodes(vocab_size, length), vocab_size), dtype)


def prefix_nodes(tokens: ArrayLike, vocab_size: int) -> Array:
    r"""The tree node of each position's prefix: ``[..., T]`` int tokens -> ``[..., T]``.

    .. math:: h_1 = 0, \qquad h_{t+1} = V h_t + 1 + y_t.

    Args:
      tokens: integer tokens ``[..., T]`` (``TypeError`` otherwise).
      vocab_size: ``V``.

    Returns:
      int32 node indices, shape of ``tokens``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.rl import tabular
      >>> tabular.prefix_nodes(jnp.array([1, 0, 1]), 2)  # root, then 2*0+1+1, 2*2+1+0
      Array([0, 2, 5], dtype=int32)
    """
    tokens = jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"`tokens` must have an integer dtype, got {tokens.dtype}.")
    node = jnp.zeros(tokens.shape[:-1], jnp.int32)
    nodes = []
    for t in range(tokens.shape[-1]):
        nodes.append(node)
        node = vocab_size * node + 1 + tokens[..., t].astype(jnp.int32)
    return jnp.stack(nodes, axis=-1)


def enumerate_sequences(vocab_size: int, length: int) -> np.ndarray:
    """All ``V**T`` token arrays ``[V**T, T]`` (int32), in lexicographic order.

    Example:
      >>> from jaxkl.rl import tabular
      >>> tabular.enumerate_sequences(2, 2).tolist()
      [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    vocab_size = check_positive_int(vocab_size, "vocab_size")
    length = check_positive_int(length, "length")
    grids = np.meshgrid(*[np.arange(vocab_size)] * length, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1).astype(np.int32)


def eos_mask(tokens: ArrayLike, eos_token: int | None) -> Array:
    """Valid positions: every position up to and including the first ``eos_token``.

    Args:
      tokens: tokens ``[..., T]``.
      eos_token: the end-of-sequence token, or ``None`` (every position valid).

    Returns:
      A bool array, shape of ``tokens``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.rl import tabular
      >>> tabular.eos_mask(jnp.array([[1, 0, 1], [0, 1, 1]]), eos_token=0)
      Array([[ True,  True, False],
             [ True, False, False]], dtype=bool)
    """
    tokens = jnp.asarray(tokens)
    if eos_token is None:
        return jnp.ones(tokens.shape, bool)
    is_eos = (tokens == eos_token).astype(jnp.int32)
    ended = jnp.cumsum(is_eos, axis=-1) - is_eos
    return ended == 0


def token_logprobs(logits: ArrayLike, tokens: ArrayLike) -> Array:
    r"""``log pi(y_t | y_<t)`` for each position of ``tokens [..., T]``, float32 at least.

    .. math:: \log \pi(y_t \mid y_{<t}) = \mathrm{log\_softmax}(\theta_{h_t})_{y_t}.

    Args:
      logits: the policy table ``[num_nodes, V]``, float dtype.
      tokens: integer tokens ``[..., T]`` with ``T`` the policy's length (``ValueError``
        otherwise).

    Returns:
      Log-probabilities, shape of ``tokens``, float32 (float64 for f64 logits).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.rl import tabular
      >>> tabular.token_logprobs(tabular.init_logits(2, 3), jnp.array([0, 1, 1]))  # log 1/2
      Array([-0.6931472, -0.6931472, -0.6931472], dtype=float32)
    """
    logits = check_float_array(logits, "logits")
    vocab_size, length = tree_shape(logits)
    tokens = jnp.asarray(tokens)
    if tokens.shape[-1:] != (length,):
        raise ValueError(
            f"`tokens` must end with the policy's length {length}, got shape {tokens.shape}."
        )
    logp = jax.nn.log_softmax(logits.astype(compute_dtype(logits)), axis=-1)
    return logp[prefix_nodes(tokens, vocab_size), tokens]


def sequence_weights(
    logits: ArrayLike, *, eos_token: int | None = None
) -> tuple[Array, Array, Array]:
    """Enumeration of all sequences: ``(tokens [N, T], mask [N, T], weights [N])``.

    ``weights`` sum to 1: the probability of each token array (masked positions count
    ``1/V`` each, see the module docstring), differentiable in ``logits``.

    Args:
      logits: the policy table ``[num_nodes, V]``, float dtype.
      eos_token: optional token that ends a sequence.

    Returns:
      ``tokens`` int32 ``[V**T, T]``, ``mask`` bool ``[V**T, T]``, ``weights`` float32
      at least ``[V**T]``.

    Example:
      >>> from jaxkl.rl import tabular
      >>> tokens, mask, weights = tabular.sequence_weights(tabular.init_logits(2, 2),
      ...                                                  eos_token=0)
      >>> tokens.shape, mask[0].tolist(), weights.tolist()  # [0, 0] ends at the first 0
      ((4, 2), [True, False], [0.25, 0.25, 0.25, 0.25])
    """
    vocab_size, length = tree_shape(logits)
    tokens = jnp.asarray(enumerate_sequences(vocab_size, length))
    mask = eos_mask(tokens, eos_token)
    logp = jnp.where(mask, token_logprobs(logits, tokens), -np.log(vocab_size))
    return tokens, mask, jnp.exp(logp.sum(-1))


def sequence_kl(
    logits: ArrayLike, other_logits: ArrayLike, *, eos_token: int | None = None
) -> Array:
    r"""Exact sequence-level ``KL(pi || pi')`` of two tabular policies, by enumeration.

    .. math:: KL(\pi \| \pi') = \sum_{y_{1:T}} \pi(y) \sum_{t\ \mathrm{valid}}
              \big[\log \pi(y_t | y_{<t}) - \log \pi'(y_t | y_{<t})\big]

    Args:
      logits: ``[num_nodes, V]`` table of the first policy.
      other_logits: the second policy's table, same shape.
      eos_token: optional token that ends a sequence.

    Returns:
      A scalar, float32 at least; differentiable in both tables.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.rl import tabular
      >>> uniform = tabular.init_logits(2, 3)
      >>> peaked = uniform.at[:, 0].set(jnp.log(3.0))  # P(token 0) = 3/4 at every prefix
      >>> round(float(tabular.sequence_kl(peaked, uniform)), 6)  # 3 * KL(Bern(3/4)||Bern(1/2))
      0.392436
    """
    logits = check_float_array(logits, "logits")
    other_logits = check_float_array(other_logits, "other_logits")
    if logits.shape != other_logits.shape:
        raise ValueError(
            f"`other_logits` has shape {other_logits.shape} but `logits` has shape "
            f"{logits.shape}; they must be equal."
        )
    tokens, mask, weights = sequence_weights(logits, eos_token=eos_token)
    log_ratio = token_logprobs(logits, tokens) - token_logprobs(other_logits, tokens)
    return jnp.sum(weights * jnp.where(mask, log_ratio, 0).sum(-1))


def sample(logits: ArrayLike, *, key: ArrayLike, num_samples: int) -> Array:
    """Samples ``num_samples`` token arrays ``[num_samples, T]`` (int32) from the policy.

    Positions after an end-of-sequence token are sampled too (callers mask them with
    :func:`eos_mask`); this keeps the output rectangular and the function jittable.

    Example:
      >>> import jax
      >>> from jaxkl.rl import tabular
      >>> tabular.sample(tabular.init_logits(3, 4), key=jax.random.key(0), num_samples=2).shape
      (2, 4)
    """
    logits = check_float_array(logits, "logits")
    num_samples = check_positive_int(num_samples, "num_samples")
    vocab_size, length = tree_shape(logits)
    logits = logits.astype(compute_dtype(logits))
    node = jnp.zeros((num_samples,), jnp.int32)
    tokens = []
    for step_key in jax.random.split(key, length):
        y = jax.random.categorical(step_key, logits[node], axis=-1).astype(jnp.int32)
        tokens.append(y)
        node = vocab_size * node + 1 + y
    return jnp.stack(tokens, axis=-1)
