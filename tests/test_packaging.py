"""The project's packaging: Dockerfile, CI script, README commands, shipped assets."""

import hashlib
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dockerfile_instructions():
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


def test_dockerfile_cuda_base_installs_cuda12_and_runs_train():
    instructions = _dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert keywords[0] == "FROM" and "nvidia/cuda" in instructions[0][1]
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    assert re.search(r"pip install [^&]*-e \"?\.\[cuda12\]\"?", runs)
    assert any(k == "COPY" for k in keywords)
    cmd = [rest for k, rest in instructions if k == "CMD"]
    assert cmd and cmd[-1].replace(" ", "") == '["python","-m","jaxrun.train"]'


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "python -m pytest -q"
    assert test_cmd in readme and test_cmd in ci
    assert '-e ".[dev]"' in ci and "venv" in ci
    assert "5" in ci and "exit" in ci  # pytest's exit code 5 is handled


def test_pyproject_extras_and_kernels_mapping():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert any(d.startswith("jax[cuda12]") for d in extras["cuda12"]) and any("jax-triton" in d for d in extras["cuda12"])
    assert any(d.startswith("jax[cuda13]") for d in extras["cuda13"])
    assert any(d.startswith("pytest") for d in extras["dev"])
    assert meta["tool"]["setuptools"]["package-dir"]["jaxrun.kernels"] == "kernels"
    assert meta["project"]["requires-python"] == ">=3.11"


def test_kernels_import_under_jaxrun():
    import jaxrun.kernels

    assert Path(jaxrun.kernels.__file__).parent == ROOT / "kernels"


def test_shipped_assets_are_intact():
    bpe = ROOT / "jaxrun" / "assets" / "gpt2.tiktoken"
    assert hashlib.sha256(bpe.read_bytes()).hexdigest() == "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
    assert "MIT" in (ROOT / "jaxrun" / "assets" / "gpt2.LICENSE").read_text()
    sample = ROOT / "jaxrun" / "assets" / "sample" / "sample.jsonl.xz"
    assert hashlib.sha256(sample.read_bytes()).hexdigest() == "1a5ec4b5593f6d9c024e9a392f300ca5d37312c23a1c4220d1f266da99b551a0"
    assert (ROOT / "jaxrun" / "assets" / "sample" / "LICENSE.md").is_file()
