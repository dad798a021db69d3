#!/bin/bash
# The exact commands behind benchmarks/results/issue12_cpu_ED/ (issue 12's CPU check on electronics -> dvd).
# Each block ran from a frozen checkout of the commit named (a git worktree at /tmp/snap*, with PYTHONPATH pointing
# at it), so that edits in the working tree could not change a run midway; one torch thread per training on the
# 2-core AMD EPYC (AVX2, AVX512-VNNI, AVX512-BF16: bf16 autocast). --out/--work were /tmp/cpu12/{results,work};
# the result JSONs were then copied here. Every result JSON records its commit (`git_commit`).
set -e
B="python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain --pairs E:D --resume \
   --out /tmp/cpu12/results --work /tmp/cpu12/work"

# 2026-11-29/30, commit f651fa9: seed 1
$B --seeds 1 --methods source_only -- train.cpu_threads=1
$B --seeds 1 --methods self_training -- train.cpu_threads=1
$B --seeds 1 --methods distill --teachers self_training -- train.cpu_threads=1
$B --seeds 1 --methods distill --teachers self_training --variant half -- train.cpu_threads=1 \
   model.num_layers=3 model.layer_choice=spread

# 2026-11-30, commit ba9e777: seeds 2 and 3, then students of the 3-seed self-training ensemble
$B --seeds 2,3 --jobs 2 --methods self_training -- train.cpu_threads=1
$B --seeds 2,3 --jobs 2 --methods source_only -- train.cpu_threads=1
$B --seeds 1 --methods distill --teachers self_training --teacher-seeds 1,2,3 --variant ens3 -- train.cpu_threads=1 &
$B --seeds 1 --methods distill --teachers self_training --teacher-seeds 1,2,3 --variant ens3half -- train.cpu_threads=1 \
   model.num_layers=3 model.layer_choice=spread &
wait
# then, two at a time: the stronger self-training options, and DAPT followed by self-training (the stack)
$B --seeds 1 --methods self_training --variant ema_soft -- train.cpu_threads=1 \
   method.self_training.ema_decay=0.999 method.self_training.labels=soft &
$B --seeds 1 --methods "dapt,dapt>self_training" -- train.cpu_threads=1 &   # dapt resumed a checkpoint f651fa9 wrote
wait

# 2026-11-30, commit 67095b9 (the mean teacher's average starts with the rounds, 428a7c7): the same EMA setting
$B --seeds 1 --methods self_training --variant ema_soft_rounds -- train.cpu_threads=1 \
   method.self_training.ema_decay=0.999 method.self_training.labels=soft

# 2026-11-30 (session 17), commit 4a7cb89 (self_training.source_epochs): the stack with its rounds only, alongside
# the 12-pair seed-1 sweep (benchmarks/results/issue12_cpu_seed1), three trainings on the two cores for a while
$B --seeds 1 --methods "dapt>self_training" --variant rounds_only -- train.cpu_threads=1 \
   method.self_training.source_epochs=0

# the result JSONs copied here, then:
R=benchmarks/results/issue12_cpu_ED
python benchmarks/amazon_pairs.py --table-only --out $R
python benchmarks/amazon_label_free.py --results $R --out $R/label_free.json
python benchmarks/amazon_targets.py --results $R --recommended self_training --seeds 3 --student distill+ens3 \
    --half-student distill+ens3half --out $R/targets.json

# 2026-11-30 (session 18), commit 5b44370: the label-free criterion `atc` added to every result JSON above from its
# finished run (adapt evaluate --unlabeled on the same target text and sample; no retraining; the record's other
# criteria kept, their recomputed drift in `rescored`), then label_free.json written again
python benchmarks/amazon_rescore.py --results $R --data-dir ../shared/data/amazon_multidomain
python benchmarks/amazon_label_free.py --results $R --out $R/label_free.json
# session 19, commit 5a56b92: each self-training round's pseudo-labels against the target labels the runs never saw
# (explains the gains and losses; chooses nothing)
python benchmarks/amazon_pseudo_labels.py --results $R --data-dir ../shared/data/amazon_multidomain --out $R/pseudo_labels.json \
    --methods self_training,self_training+ema_soft,self_training+ema_soft_rounds,dapt-then-self_training,dapt-then-self_training+rounds_only
