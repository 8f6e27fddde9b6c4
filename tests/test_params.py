"""jaxrun.params, the parameter table, against recipe §1.3, §1.12, §3.1-3.2 and §3.5 written out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrun import params
from jaxrun.config import CONFIG_DIR, load_config

RECORD = load_config(CONFIG_DIR / "record60.py")

# recipe §1.3: name -> (shape, dtype, optimizer, lr_mul, wd_mul, Adam betas)
WANT = {
    "qkvo": ((10, 3072, 768), "bfloat16", "NorMuon", 1.0, 1.0, None),
    "fc": ((11, 3072, 768), "bfloat16", "NorMuon", 1.0, 1.0, None),
    "proj": ((11, 3072, 768), "bfloat16", "NorMuon", 2.0, 1.0, None),
    "lm_head": ((50304, 768), "bfloat16", "Adam", 1.0, 150.0, (0.5, 0.95)),
    "embed": ((50304, 768), "bfloat16", "Adam", 1.0, 150.0, (0.5, 0.95)),
    "ve": ((3, 50304, 768), "bfloat16", "Adam", 75.0, 5.0, (0.75, 0.95)),
    "attn_gate_bank": ((10, 6, 12), "bfloat16", "Adam", 1.0, 1.0, (0.9, 0.99)),
    "ve_gate_bank": ((5, 6, 12), "bfloat16", "Adam", 1.0, 1.0, (0.9, 0.99)),
    "smear_gate": ((1, 12), "bfloat16", "Adam", 0.01, 0.0, (0.9, 0.99)),
    "skip_gate": ((1, 12), "bfloat16", "Adam", 0.05, 0.0, (0.9, 0.99)),
    "x0_lambdas": ((11,), "float32", "Adam", 5.0, 0.0, (0.65, 0.95)),
    "scalars": ((40,), "float32", "Adam", 5.0, 0.0, (0.9, 0.99)),
}


def test_record_table_matches_the_recipe():
    shapes = params.shapes(RECORD.model)
    assert list(shapes) == list(WANT)  # the model creates them in this order
    for name, (shape, dtype, optimizer, lr_mul, wd_mul, betas) in WANT.items():
        assert (shapes[name].shape, shapes[name].dtype.name) == (shape, dtype), name
        assert params.group(name, RECORD.optim) == (optimizer, lr_mul, wd_mul, betas), name
    assert sum(math.prod(shape) for shape, *_ in WANT.values()) == 268_665_987  # recipe §1.12


def test_flags_of_the_record():
    assert params.MUON_PARAMS == params.names("NorMuon") == ("qkvo", "fc", "proj")  # the 32 matrices, recipe §3.1
    assert params.names("Adam") == ("lm_head", "embed", "ve", "attn_gate_bank", "ve_gate_bank", "smear_gate",
                                    "skip_gate", "x0_lambdas", "scalars")
    assert params.MATMUL_PARAMS == ("qkvo", "fc", "proj", "lm_head")  # recipe §1.12: QKVO + MLP + head
    assert params.SQUARE_BLOCK_BANKS == ("qkvo",)  # Q, K, V, O blocks orthogonalised apart, recipe §3.2 item 2
    assert params.SPLIT_PRODUCT_BANKS == ("fc", "proj")  # the reference's "mlp" group, recipe §3.2
    # ZeRO may split any axis of any parameter, first one first (recipe §3.5, jaxrun's layout)
    assert {name: p.zero_axes for name, p in params.TABLE.items()} == {
        name: tuple(range(len(shape))) for name, (shape, *_) in WANT.items()}


def test_tiny_shapes_follow_the_config():
    tiny = load_config(CONFIG_DIR / "tiny.py").model  # 6 layers (layer 3 without attention), width 64, 4 VE layers
    got = {name: s.shape for name, s in params.shapes(tiny).items()}
    assert got == {"qkvo": (5, 256, 64), "fc": (6, 256, 64), "proj": (6, 256, 64), "lm_head": (50304, 64),
                   "embed": (50304, 64), "ve": (3, 50304, 64), "attn_gate_bank": (5, 2, 12), "ve_gate_bank": (4, 2, 12),
                   "smear_gate": (1, 12), "skip_gate": (1, 12), "x0_lambdas": (6,), "scalars": (24,)}


def test_initialisers():
    m = RECORD.model
    key = jax.random.key(0)
    qkvo = np.asarray(params.TABLE["qkvo"].init(m)(key, (2, 4 * 768, 768), jnp.bfloat16), np.float32)
    assert np.all(qkvo[:, 3 * 768:] == 0) and np.abs(qkvo[:, : 3 * 768]).max() <= 1 / 16  # recipe §1.3: ±sqrt(3)/sqrt(768)
    assert np.abs(qkvo[:, : 3 * 768]).max() > 0.99 / 16
    fc = np.asarray(params.TABLE["fc"].init(m)(key, (1, 3072, 768), jnp.bfloat16), np.float32)
    assert 0.99 / 32 < np.abs(fc).max() <= 1 / 32
    head = np.asarray(params.TABLE["lm_head"].init(m)(key, (1000, 768), jnp.bfloat16), np.float32)
    assert abs(head.std() - 0.005) < 1e-4
    for name in ("proj", "ve", "attn_gate_bank", "ve_gate_bank", "smear_gate", "skip_gate", "x0_lambdas"):
        shape = params.TABLE[name].shape(m)
        assert not np.any(np.asarray(params.TABLE[name].init(m)(key, shape, jnp.float32))), name
    scalars = np.asarray(params.TABLE["scalars"].init(m)(key, (40,), jnp.float32))
    # recipe §1.3: resid 1.1 x 11, (0.5, 1.0) x 11 interleaved, smear 0, backout 0.5, skip -1.5, padding 1
    want = np.array([1.1] * 11 + [0.5, 1.0] * 11 + [0.0, 0.5, -1.5] + [1.0] * 4, np.float32)
    np.testing.assert_array_equal(scalars, want)


def test_group_errors():
    with pytest.raises(KeyError, match="no parameter 'wte'"):
        params.group("wte", RECORD.optim)
    with pytest.raises(KeyError, match="no lr_mul for bank 'lm_head'"):
        params.muon_lr_mul("lm_head", RECORD.optim)
    with pytest.raises(KeyError, match="no Adam group for parameter 'fc'"):
        params.adam_group("fc", RECORD.optim)
    with pytest.raises(ValueError, match="optimizer must be"):
        params.names("SGD")


def _jaxrun_imports(module: str) -> set[str]:
    """The jaxrun modules a source file imports (at any depth of the file), read with ast: nothing is imported."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    package, _, name = module.rpartition(".")
    path = root / (package or "jaxrun") / f"{name}.py"  # kernels/ is the jaxrun.kernels package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "jaxrun":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxrun."):
            found.add(node.module.removeprefix("jaxrun."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("jaxrun.") for a in node.names if a.name.startswith("jaxrun.")}
    return found


def test_imports_point_downward():
    """The table sits under everything that reads it; model and optim no longer import each other (issue #18)."""
    allowed = {
        "params": {"config"},
        "model": {"config", "ops", "params"},
        "optim": {"config", "params", "schedule"},
        "sharding": {"params"},
        "flops": {"config", "params"},
        "ops": set(),
        "kernels.fp8_head": {"kernels.triton_runtime", "ops"},
        "kernels.relu2_mlp": {"kernels.triton_runtime"},
    }
    for module, ok in allowed.items():
        assert _jaxrun_imports(module) <= ok, (module, _jaxrun_imports(module) - ok)
