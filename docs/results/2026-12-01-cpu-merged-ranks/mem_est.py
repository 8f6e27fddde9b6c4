"""python docs/results/2026-12-01-cpu-merged-ranks/mem_est.py 0 131072 (JAX_PLATFORMS=cpu XLA_FLAGS=)

Compiled memory of record60's phase gradient functions on the CPU (xla ops, bf16 head), one rank per forward vs
merged: temp bytes from XLA's buffer assignment. Not the GPU step's memory: the xla attention and CE hold (T, T)-band
scores and fp32 (T, V) temporaries that the GPU kernels stream."""
import dataclasses, sys, time, json
import jax
from jaxrun import engine, schedule, sharding
from jaxrun.config import CONFIG_DIR, load_config
cfg = load_config(CONFIG_DIR / "record60.py")
xla = tuple((op, "xla") for op, _ in cfg.model.backends)
out = []
for budget in [int(x) for x in sys.argv[1:]]:
    c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backends=xla, fp8_head=False, train_forward_tokens=budget))
    mesh = sharding.make_mesh(c.data.num_ranks, jax.devices()[:1])
    shapes = jax.eval_shape(lambda k: engine.init_state(c, k), jax.random.PRNGKey(0))
    for phase_step in (0, 700):
        shape = schedule.step_shape(phase_step, c.schedule)
        t0 = time.time()
        fn, args, _ = engine.grad_fn_and_args(c, mesh, shapes, shape)
        compiled = fn.lower(*args).compile()
        m = compiled.memory_analysis()
        row = dict(budget=budget, step=phase_step, tokens_per_rank=shape.tokens_per_rank,
                   ranks_per_forward=engine.ranks_per_forward(c, shape.tokens_per_rank, 1),
                   temp_gib=m.temp_size_in_bytes / 2**30, args_gib=m.argument_size_in_bytes / 2**30,
                   out_gib=m.output_size_in_bytes / 2**30, seconds=round(time.time() - t0, 1))
        print(json.dumps(row), flush=True)
