#!/usr/bin/env bash
# Here, before a session's GPU check: what scripts/gpu_check.sh needs on the GPU machine, in
# .gpu/ (git ignores it through .git/info/exclude), to be carried there (`carry: [".gpu"]`).
#
#   bash scripts/gpu_prepare.sh          # ~1 min with a warm pip cache; ~25 MB
#
# - .gpu/whl: Python 3.12 wheels of what the machine's image lacks (its python3 has torch,
#   peft, accelerate, pytest and most of the rest; docs of the device tool): hydra-core,
#   omegaconf, antlr4 and deepspeed (sdists here, built as py3-none-any wheels), datasets and
#   its dill / multiprocess, vaderSentiment, DeepSpeed's hjson and pydantic, and the
#   transformers this venv tests with (the image's is older; its huggingface_hub 1.33 serves
#   it), each at the version installed in this venv;
# - .gpu/red_cache/toy: the default and the tiny toy worlds, as built here, so nothing is
#   built there (the benchmarks read the default world's tokenizer and prompts, tests/gpu the
#   tiny world).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .git/info
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/red_cache/toy

version() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pins=()
for name in hydra-core omegaconf datasets dill multiprocess vaderSentiment hjson pydantic \
            pydantic-core annotated-types typing-inspection transformers; do
    v=$(version "$name")
    [ -n "$v" ] || { echo "not installed in $PY: $name" >&2; exit 1; }
    pins+=("$name==$v")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl "${pins[@]}"
"$PY" -m pip wheel -q --no-deps -w .gpu/whl "deepspeed==$(version deepspeed)" \
    "antlr4-python3-runtime==$(version antlr4-python3-runtime)"

RED_CACHE=${RED_CACHE:-$HOME/.cache/red} "$PY" - <<'EOF'
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from red_cli.config import conf_dir
from red_cli.toy import ToyConfig
from red_cli.toy.build import as_toy_config, ensure_toy

for name in ("default", "tiny"):
    cfg = OmegaConf.merge(OmegaConf.structured(ToyConfig),
                          OmegaConf.load(Path(conf_dir()) / "toy" / f"{name}.yaml"))
    world = Path(ensure_toy(as_toy_config(cfg), progress=False).root)
    shutil.copytree(world, Path(".gpu/red_cache/toy") / world.name)
    print(f"toy world {name}: {world.name}")
EOF
ls .gpu/whl
du -sh .gpu
