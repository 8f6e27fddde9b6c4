"""What the dense jax-triton kernels share: triton when it is installed, jax_triton with a clear error where it cannot
run, and the tile shape of a tiled matrix product.

CPU-only installs have no triton: the kernel modules then define no kernels, but their wrappers still check their
input (so a bad call fails the same way everywhere) and then raise the error of `jax_triton()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None


def jax_triton():
    """The jax_triton module, or an error that says where the 'triton' backend runs and what to use elsewhere."""
    try:
        import jax_triton as jt
    except ImportError as err:
        raise RuntimeError(
            "the 'triton' backend needs an NVIDIA GPU with triton and jax-triton installed "
            "(pip install -e '.[cuda13]' on the GPU machine); on this machine select the 'xla' backend "
            "(ModelConfig.backends, e.g. --set model.backends=\"(('lm_head', 'xla'), ...)\")"
        ) from err
    return jt


@dataclass(frozen=True)
class MatmulTiles:
    """Tile shape and launch settings of one tiled matrix-product kernel."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int  # output tiles are visited in column-major groups of this many tile rows, for L2 reuse
    num_warps: int
    num_stages: int  # software-pipelining depth of the K loop

    def grid(self, m: int, n: int) -> tuple[int]:
        return (-(-m // self.block_m) * -(-n // self.block_n),)

    def persistent_programs(self, m: int, n: int) -> int:
        """Programs of a persistent launch over an (m, n) output: one per SM, or one per tile where there are fewer."""
        return min(self.grid(m, n)[0], streaming_multiprocessors())

    def meta(self) -> dict[str, int]:
        """The constexpr arguments of the kernels (num_warps / num_stages go to triton_call separately)."""
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k, "GROUP_M": self.group_m}


def streaming_multiprocessors() -> int:
    """SMs of the default GPU (a persistent kernel runs one program per SM)."""
    return int(getattr(jax.devices()[0], "core_count", 0) or 132)
