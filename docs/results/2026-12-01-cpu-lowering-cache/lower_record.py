"""Lowering of every record60 step variant on this CPU machine (xla backends), through an empty lowering cache and then
through the one it filled, as a second start finds it: the tracing floor of a cached start, with and without the
cache. No XLA compile (that is the persistent compilation cache's part)."""
import json, sys, tempfile, time
import jax
from jaxrun import engine, schedule, stepbench
from jaxrun.config import CONFIG_DIR, load_config
from jaxrun.lowering_cache import LoweringCache, run_context

P = ["data.train_files=data/proxy16/fineweb_train_*.bin", "data.val_file=data/proxy16/fineweb_val_000000.bin"]
cfg = load_config(CONFIG_DIR / "record60.py", P)
session = engine.setup(cfg, announce=lambda *_: None)
cfg, mesh, shapes, shardings = session.cfg, session.mesh, session.shapes, session.shardings
print("backends", dict(cfg.model.backends))
out = {}
with tempfile.TemporaryDirectory() as d:
    for start in ("cold", "warm", "no cache"):
        jax.clear_caches()
        cache = LoweringCache(None) if start == "no cache" else LoweringCache(d, run_context(cfg, mesh))
        rows, t_all = [], time.perf_counter()
        todo = {}
        for shape in dict.fromkeys(schedule.step_shape(s, cfg.schedule) for s in range(cfg.schedule.total_steps)):
            todo.setdefault(("grad", engine.grad_key(shape)), lambda shape=shape: engine.grad_fn_and_args(cfg, mesh, shapes, shape, session.kernels))
            todo.setdefault(("update", shape.adam), lambda shape=shape: engine.update_fn_and_args(cfg, mesh, shapes, shardings, shape.adam))
        for s in engine.eval_steps(cfg):
            todo.setdefault(("eval", engine.eval_variant(cfg, s)), lambda key=engine.eval_variant(cfg, s): engine.eval_fn_and_args(session, *key))
        for key, make in todo.items():
            t = time.perf_counter()
            fn, args, donated = make()
            _, how = cache.lower(repr(key), fn, args, donated)
            rows.append((repr(key), round(time.perf_counter() - t, 2), how))
        out[start] = {"total_s": round(time.perf_counter() - t_all, 1), "variants": rows}
        print(start, out[start]["total_s"], "s for", len(rows), "variants:", [r[1] for r in rows], {r[2] for r in rows}, flush=True)
session.close()
json.dump(out, open(sys.argv[1], "w"), indent=1)
