"""One rank per forward (model.train_forward_tokens = 0) is the program of the commit before merging, bit for bit:
the StableHLO of record60's gradient function (xla ops, one CPU device, phases 1 and 3) here and at OLD_COMMIT.

    JAX_PLATFORMS=cpu XLA_FLAGS= python docs/results/2026-12-01-cpu-merged-ranks/program_identity_check.py [OLD_COMMIT]
"""
import os
import subprocess
import sys
import tempfile

CHILD = """
import dataclasses, hashlib, jax
from jaxrun import engine, schedule, sharding
from jaxrun.config import CONFIG_DIR, load_config
cfg = load_config(CONFIG_DIR / "record60.py")
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backends=tuple((op, "xla") for op, _ in cfg.model.backends)))
mesh = sharding.make_mesh(cfg.data.num_ranks, jax.devices()[:1])
shapes = jax.eval_shape(lambda k: engine.init_state(cfg, k), jax.random.PRNGKey(0))
for step in (0, 1200):
    text = engine.lower_grad_fn(cfg, mesh, shapes, schedule.step_shape(step, cfg.schedule)).as_text()
    print(step, hashlib.sha256(text.encode()).hexdigest())
"""


def hashes(root: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": root}
    return subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=root,
                          check=True).stdout


old_commit = sys.argv[1] if len(sys.argv) > 1 else "8aa250f"
with tempfile.TemporaryDirectory() as old:
    subprocess.run(f"git archive {old_commit} jaxrun kernels configs | tar x -C {old}", shell=True, check=True)
    os.symlink(os.path.join(old, "kernels"), os.path.join(old, "jaxrun", "kernels"))  # the installed layout
    before = hashes(old)
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", "..", ".."))
now = hashes(root)
print(f"{old_commit}:\n{before}this tree:\n{now}identical: {before == now}")
sys.exit(0 if before == now else 1)
