r"""Small dense linear algebra in plain JAX operations: Cholesky and triangular solves.

Why jaxkl does not call ``jnp.linalg.cholesky`` or ``jax.scipy.linalg.solve_triangular``
on its hot paths: on CPU those lower to jaxlib's LAPACK FFI kernels, which in jaxlib 0.10
split a batch into sub-tasks on XLA:CPU's intra-op thread pool and block the calling
pool thread until they finish (``jax::ParallelBatchMap`` -> ``absl::BlockingCounter``).
When XLA's thunk executor runs as many such kernels at once as the pool has threads
(two independent ``log_prob`` calls of full-covariance Gaussians on a 2-core machine is
enough), every pool thread waits for sub-tasks that no thread is left to run: the
process deadlocks with no CPU use. Written as elementwise operations, reductions and a
loop over the (small) dimension, these functions compile to ordinary fused XLA code with
no custom call, on every backend and jaxlib version, and JAX differentiates them
directly.

The cost is ``d`` sequential steps for a ``d x d`` matrix, each a vectorised operation
over the batch, which is what LAPACK's level-2 kernels do for the sizes jaxkl meets (the
event dimension of a mixture or a fitted Gaussian). The algorithms are the textbook
ones: G. H. Golub and C. F. Van Loan, "Matrix Computations", 4th ed., 2013, Alg. 3.1.1
(forward substitution) and Alg. 4.2.1 (gaxpy Cholesky).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Up to this size the loop over the dimension is unrolled into straight-line code, which
# XLA fuses and which costs no loop compilation in eager mode; beyond it, a fori_loop
# keeps the program size independent of d.
_UNROLL_MAX_DIM = 16


def _loop(dim: int, step, init):
    if dim <= _UNROLL_MAX_DIM:
        carry = init
        for i in range(dim):
            carry = step(i, carry)
        return carry
    return jax.lax.fori_loop(0, dim, step, init)


def solve_lower_triangular(lower: Array, rhs: Array) -> Array:
    r"""``z`` with ``lower @ z = rhs`` for lower-triangular ``lower`` (forward substitution).

    .. math:: z_i = \Big(b_i - \sum_{j<i} L_{ij} z_j\Big) / L_{ii}.

    Args:
      lower: ``[..., d, d]``; entries above the diagonal are ignored.
      rhs: ``[..., d]`` (one right-hand side per batch element); the batch dimensions of
        both arguments broadcast against each other.

    Returns:
      ``[..., d]`` in the common dtype, with the broadcast batch shape.
    """
    dim = lower.shape[-1]
    batch = jnp.broadcast_shapes(lower.shape[:-2], rhs.shape[:-1])
    dtype = jnp.result_type(lower, rhs)
    lower = jnp.broadcast_to(jnp.tril(lower).astype(dtype), batch + (dim, dim))
    rhs = jnp.broadcast_to(rhs.astype(dtype), batch + (dim,))

    def step(i, z):
        row = jax.lax.dynamic_index_in_dim(lower, i, axis=-2, keepdims=False)
        # z is still zero at positions >= i, so the full dot product is the partial sum.
        partial = jnp.sum(row * z, axis=-1)
        diagonal = jax.lax.dynamic_index_in_dim(row, i, axis=-1, keepdims=False)
        value = (jax.lax.dynamic_index_in_dim(rhs, i, axis=-1, keepdims=False) - partial)
        return jax.lax.dynamic_update_index_in_dim(z, value / diagonal, i, axis=-1)

    return _loop(dim, step, jnp.zeros_like(rhs))


def solve_lower_triangular_matrix(lower: Array, rhs: Array) -> Array:
    """``Z`` with ``lower @ Z = rhs`` for a matrix right-hand side ``rhs`` ``[..., d, m]``."""
    columns = jnp.swapaxes(rhs, -1, -2)  # [..., m, d]: one vector right-hand side per column
    solved = solve_lower_triangular(lower[..., None, :, :], columns)
    return jnp.swapaxes(solved, -1, -2)


def cholesky(matrix: Array) -> Array:
    r"""The lower Cholesky factor ``L`` of symmetric positive-definite ``matrix = L L^T``.

    Column ``j`` (gaxpy form): ``v = A_{:, j} - L_{:, :j} L_{j, :j}^T``,
    ``L_{jj} = sqrt(v_j)``, ``L_{i>j, j} = v_i / L_{jj}``. A matrix that is not positive
    definite gives NaN from the first non-positive pivot on (as ``jnp.linalg.cholesky``
    does); callers that accept user input check definiteness eagerly first. The input is
    symmetrised first, so that the gradient is symmetric, as ``jnp.linalg.cholesky``'s is.

    Args:
      matrix: ``[..., d, d]``.

    Returns:
      ``[..., d, d]`` lower-triangular, zero above the diagonal.
    """
    dim = matrix.shape[-1]
    rows = jnp.arange(dim)
    matrix = 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))

    def step(j, factor):
        row_j = jax.lax.dynamic_index_in_dim(factor, j, axis=-2, keepdims=False)  # L[j, :]
        column = jax.lax.dynamic_index_in_dim(matrix, j, axis=-1, keepdims=False)  # A[:, j]
        # Columns >= j of the factor are still zero, so this is A[:, j] - L[:, :j] L[j, :j]^T.
        v = column - jnp.sum(factor * row_j[..., None, :], axis=-1)
        pivot = jnp.sqrt(jax.lax.dynamic_index_in_dim(v, j, axis=-1, keepdims=True))
        new_column = jnp.where(rows > j, v / pivot, jnp.where(rows == j, pivot, 0))
        return jax.lax.dynamic_update_index_in_dim(factor, new_column, j, axis=-1)

    return _loop(dim, step, jnp.zeros_like(matrix))


def log_abs_det_triangular(lower: Array) -> Array:
    """``log |det L|`` of a triangular ``[..., d, d]`` matrix: the sum of log |diagonal|."""
    return jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lower, axis1=-2, axis2=-1))), axis=-1)
