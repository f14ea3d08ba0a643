#!/usr/bin/env bash
# `make demo`: start the dashboard (`segboard up`, single-user, 127.0.0.1) on a demo workspace in
# runs/demo-workspace and fill it while it runs: Stanford Background (or a synthetic dataset when the shared
# data is not next to the repository), a 3-fold baseline, an ablation, an ensemble, a pseudo-label round and
# submissions (docs/demo.md). Extra arguments (DEMO_ARGS): --reset, --size test, --port N, --no-serve.
#
# `make demo-cli` (`scripts/demo.sh cli`): train the fast recipe from the command line instead, with a
# progress bar and per-epoch metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ "${1:-}" != "cli" ]; then
    exec "$PY" -m worker.demo "$@"
fi
DATA_ROOT="${SEGBOARD_DATA_ROOT:-$(cd .. && pwd)/shared/data}"
EPOCHS="${DEMO_EPOCHS:-3}"
OUT="${DEMO_OUT:-runs/demo}"
mkdir -p "$OUT"
if [ -d "$DATA_ROOT/stanford-background/images" ]; then
    echo "== training the 'fast' recipe on $DATA_ROOT/stanford-background for $EPOCHS epochs"
    "$PY" -m segcore train segcore/recipes/fast.yaml --dataset-root "$DATA_ROOT" \
        --workdir "$OUT/fast" --set "training.epochs=$EPOCHS"
else
    echo "== $DATA_ROOT/stanford-background not found: training on a synthetic dataset instead"
    "$PY" -m segcore synth "$OUT/synthetic" --images 64 --classes 4 --size 96 > "$OUT.source.json"
    "$PY" - "$OUT" "$EPOCHS" <<'PYEOF'
import json, sys
from pathlib import Path
from segcore.recipes import load_recipe
out, epochs = Path(sys.argv[1]), int(sys.argv[2])
cfg = load_recipe("fast").to_dict()
cfg["data"] = {"source": json.loads(Path(f"{out}.source.json").read_text()),
               "classes": ["background", "c1", "c2", "c3", "c4"], "image_size": [96, 96],
               "split": {"kind": "holdout", "val_fraction": 0.25}}
cfg["training"]["epochs"] = epochs
Path(out, "synthetic.yaml").write_text(__import__("yaml").safe_dump(cfg))
PYEOF
    "$PY" -m segcore train "$OUT/synthetic.yaml" --workdir "$OUT/synthetic-run"
fi
