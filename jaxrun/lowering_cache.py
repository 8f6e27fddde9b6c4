"""The step functions' lowerings kept on disk (jax.export), so that a start whose XLA compilation cache is warm also
skips tracing.

Why: lowering one of the record's gradient variants traces the whole model under autodiff. That takes 3-4 s of Python
on the CPU machine, one variant after another, before JAX's persistent compilation cache is even consulted (it keys on
the lowered module). With ~11 variants, that is the floor of a cached start. A hit here deserialises the lowering in
milliseconds and lowers a call of it in a fraction of a second.

A miss and a hit compile the same module, a jit of the exported function's call. So the XLA cache entry written on the
first start is the one the second start finds.

The key pins everything a trace can depend on:
- jaxrun's own source files;
- the versions of jax, jaxlib, triton and jax-triton;
- the platform, the devices and the mesh;
- the config's model, optim, schedule and data sections, with the backends resolved;
- the variant's name and its abstract arguments (tree, shapes, dtypes, shardings).

A stored lowering is thus only ever read by the exact software that wrote it, as far as files and versions tell. A
change made in the process (a function patched at run time) or to an installed dependency's files is not in the key:
such work turns the cache off (run.lowering_cache_dir = ""). That is why its custom calls (the triton
kernels', cuDNN's) may be serialised: jax.export refuses them by default because their ABI may change from one version
to the next. A function that jax.export cannot carry is lowered as usual and named in ``uncached``. A damaged file is
removed and written again. The cache never changes what runs, only how fast the start is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import tempfile
import time
from pathlib import Path

import jax
from jax import export

# Custom-call targets that jaxrun's ops emit and that jax.export does not know as stable: jax-triton's kernel launch,
# XLA's own triton fusions, and the cuDNN attention of the 'cudnn' attention backend (jax.nn.dot_product_attention).
CUSTOM_CALLS = (
    "triton_kernel_call",
    "__gpu$xla.gpu.triton",
    *(f"__cudnn$fmha{kind}{suffix}" for kind in ("Softmax", "ScaleBiasSoftmax", "SoftmaxDropout",
                                                  "ScaleBiasSoftmaxDropout") for suffix in ("", "Backward")),
    "__cudnn$fmhaSoftmaxF8", "__cudnn$fmhaSoftmaxBackwardF8",
)
_DISABLED_CHECKS = tuple(export.DisabledSafetyCheck.custom_call(t) for t in CUSTOM_CALLS)

MAGIC = b"jaxrun-lowering-1\n"  # then the sha256 of the payload, then the payload (Exported.serialize())
SUFFIX = ".jaxexport"
# Every change to jaxrun's sources keys new entries, so the directory is kept under this many bytes: after a store, the
# least recently used entries go first (a read refreshes an entry's time). The record's 13 variants take ~1 MB.
MAX_BYTES = 1 << 30


def _package_dirs() -> list[Path]:
    import jaxrun
    import jaxrun.kernels

    return [Path(jaxrun.__file__).parent, Path(jaxrun.kernels.__file__).parent]


def source_fingerprint() -> str:
    """sha256 over jaxrun's Python sources (the package, its data subpackage and the kernels), by relative path."""
    digest = hashlib.sha256()
    for root in _package_dirs():
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def run_context(cfg, mesh) -> str:
    """The part of every key that a run's variants share: sources, versions, devices, mesh, config (less cfg.run,
    which no trace reads)."""
    devices = mesh.devices.flatten().tolist()
    parts = [
        source_fingerprint(),
        *(f"{p}={_version(p)}" for p in ("jax", "jaxlib", "triton", "jax-triton", "jax-cuda12-plugin",
                                          "jax-cuda13-plugin")),
        f"x64={jax.config.jax_enable_x64} matmul={jax.config.jax_default_matmul_precision}",
        f"platform={devices[0].platform} kinds={sorted({d.device_kind for d in devices})}",
        f"mesh={dict(mesh.shape)} devices={[d.id for d in devices]} processes={jax.process_count()}",
        repr((cfg.model, cfg.optim, cfg.schedule, cfg.data)),
    ]
    return "\n".join(parts)


def signature(args) -> str:
    """The abstract arguments as a lowering sees them: the tree, and each leaf's shape, dtype and sharding."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    described = [f"{tuple(x.shape)} {x.dtype} {getattr(x, 'sharding', None)}" for x in leaves]
    return f"{treedef}\n" + "\n".join(described)


# What LoweringCache.lower did, per function (StepFunctions.lowering, the compile log line)
HIT, STORED, OFF = "read", "stored", "off"


@dataclasses.dataclass(frozen=True)
class LoweringCache:
    """Lowers step functions through the disk cache in ``directory`` (None: no cache, plain fn.lower)."""

    directory: str | None
    context: str = ""  # run_context of the run
    max_bytes: int = MAX_BYTES

    @classmethod
    def for_run(cls, cfg, mesh) -> "LoweringCache":
        """The cache of cfg.run.lowering_cache_dir ("" disables it), keyed for this run's code, devices and config."""
        if not cfg.run.lowering_cache_dir:
            return cls(None)
        return cls(os.path.expanduser(cfg.run.lowering_cache_dir), run_context(cfg, mesh))

    def key(self, name: str, args) -> str:
        return hashlib.sha256(f"{self.context}\n{name}\n{signature(args)}".encode()).hexdigest()

    def lower(self, name: str, fn, args: tuple, donate_argnums: tuple[int, ...] = ()):
        """(fn.lower(*args) by way of jax.export, what was done: HIT, STORED, OFF or a sentence). ``fn`` is the jitted
        function; ``donate_argnums`` its donation, which the exported call does not carry."""
        if self.directory is None:
            return fn.lower(*args), OFF
        path = Path(self.directory) / (self.key(name, args) + SUFFIX)
        exported, trouble = self._read(path)
        outcome = HIT
        if exported is not None:
            _touch(path)
        else:
            try:
                exported = export.export(fn, disabled_checks=_DISABLED_CHECKS)(*args)
                payload = exported.serialize()
            except Exception as err:  # noqa: BLE001 - what jax.export cannot carry is lowered as usual, and named
                why = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                return fn.lower(*args), f"not cached ({type(err).__name__}: {why})"
            outcome = self._write(path, payload)
            if outcome == STORED:
                prune(path.parent, self.max_bytes, keep=path)
        if trouble:
            outcome = f"{outcome} ({trouble})"
        return jax.jit(exported.call, donate_argnums=donate_argnums).lower(*args), outcome

    @staticmethod
    def _read(path: Path):
        """(the Exported, None) or (None, why not: "" when there is no entry)."""
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None, ""
        except OSError as err:
            return None, f"could not read {path}: {err}"
        head, digest, payload = blob[: len(MAGIC)], blob[len(MAGIC) : len(MAGIC) + 32], blob[len(MAGIC) + 32 :]
        if head != MAGIC or hashlib.sha256(payload).digest() != digest:
            path.unlink(missing_ok=True)
            return None, f"replaced the damaged {path.name}"
        try:
            return export.deserialize(bytearray(payload)), None
        except Exception as err:  # noqa: BLE001 - a whole file this jax cannot read (another format): written again
            path.unlink(missing_ok=True)
            return None, f"replaced the unreadable {path.name} ({type(err).__name__})"

    @staticmethod
    def _write(path: Path, payload: bytes) -> str:
        """STORED, or why not. Atomic: a temporary file renamed into place, so a crash leaves no half-written entry."""
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
            os.replace(tmp, path)
            return STORED
        except OSError as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return f"not stored ({err})"


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves its entries; only their order for pruning is not refreshed
        pass


def prune(directory: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries until the directory's entries total max_bytes or less (never ``keep``),
    and temporary files that a killed writer left more than an hour ago; returns what was removed."""
    removed, now = [], time.time()
    try:
        entries = [(p.stat().st_mtime, p.stat().st_size, p) for p in directory.glob("*" + SUFFIX)]
        stale = [p for p in directory.glob(".tmp-*" + SUFFIX) if now - p.stat().st_mtime > 3600]
    except OSError:
        return removed
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and p == keep:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
        total -= size
    for p in stale:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
