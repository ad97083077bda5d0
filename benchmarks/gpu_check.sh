#!/usr/bin/env bash
# The GPU checks of the scale issue, as one script for a machine with one CUDA GPU (about 10 minutes on an H200).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# 1. the paper configuration's throughput (ResNet-18, 128², batch 512, 3+1 views): every world, the bank sampler,
#    our training step and the official way's, in one process -> $OUT/bench-paper.json (target: >= 5 x 3,100
#    views/s on an H200; the paper's Table 5 implies ~3,100 on an A100);
# 2. the same step compiled (torch.compile) -> $OUT/bench-paper-compiled.json;
# 3. the live worlds and a short training run under CUDA's own sync detector
#    (torch.cuda.set_sync_debug_mode("warn")), with the host-sync tests also run on the GPU -> $OUT/syncs.txt.
set -euo pipefail
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python run.py bench --preset paper --device cuda --repeats 20 --out "$OUT/bench-paper.json" | tee "$OUT/bench-paper.txt"
python run.py bench --preset paper --device cuda --repeats 20 --no-worlds --set train.compile=true \
    --out "$OUT/bench-paper-compiled.json" | tee "$OUT/bench-paper-compiled.txt"
python - <<'EOF' 2>&1 | tee "$OUT/syncs.txt"
import warnings, torch, envs
from envs.sequences import SequenceSource
torch.cuda.set_sync_debug_mode("warn")
for env_id in [w for w in sorted(envs.WORLDS) if "3DIEBench" not in w]:
    world = envs.make_world(env_id, device="cuda")
    source = SequenceSource(world, seq_len=3, batch_size=512, seed=0)
    source.next()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            source.next()
    print(f"{env_id}: {len(caught)} synchronising calls in 3 live batches of 512 x 4 views")
    for w in caught[:5]:
        print("   ", str(w.message).splitlines()[0], f"({w.filename}:{w.lineno})")
EOF
