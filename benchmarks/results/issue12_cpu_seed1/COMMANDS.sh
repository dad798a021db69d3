#!/bin/bash
# The exact commands behind benchmarks/results/issue12_cpu_seed1/: seed 1 of source_only and self_training on the 12
# Amazon pairs with the current code (dropout on in training), on the 2-core AMD EPYC (AVX2, AVX512-VNNI,
# AVX512-BF16: bf16 autocast), one torch thread per training, two trainings at a time. Each block ran from a frozen
# checkout of the commit named (a git worktree at /tmp/snap*, PYTHONPATH pointing at it); --out/--work were
# /tmp/cpu12/{results,work}; the result JSONs were then copied here. Every result JSON records its commit.
# E->D's seed-1 runs are the ones in benchmarks/results/issue12_cpu_ED (commit f651fa9), copied here too.
set -e
B="python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain --pairs all --seeds 1 --resume \
   --out /tmp/cpu12/results --work /tmp/cpu12/work"

# 2026-11-30 (session 17), commit e583d97: the four source-only models (one per source, scored on its three
# targets), then self-training pair by pair, the screening pairs (B:K, D:E, E:B, K:D) first
$B --methods source_only,self_training --jobs 2 -- train.cpu_threads=1
# (stopped at the session's end with self-training on 9 pairs; E:K and K:B were mid-training, K:E not started)

# commit 5aa634f: the source-only records of the targets a model was not trained beside moved aside and written again
# from the same finished runs (no retraining; the same accuracies), now with each target's label-free criteria
# (adapt evaluate --unlabeled)
$B --methods source_only -- train.cpu_threads=1

# 2026-11-30 (session 18), the same commit e583d97 (a fresh worktree of it): the three pairs left, E:K and K:B
# resumed from their checkpoints; then, on the core K:B freed, the same-size student of E:B's self-training run
$B --methods self_training --jobs 2 -- train.cpu_threads=1
python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain --pairs E:B --seeds 1 --resume \
   --out /tmp/cpu12/results --work /tmp/cpu12/work --methods distill --teachers self_training -- train.cpu_threads=1
# then, on both cores, the pre-registered candidate self_training+ema_soft on two pairs where plain self-training lost
python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain --pairs E:K,D:B --seeds 1 --resume \
   --out /tmp/cpu12/results --work /tmp/cpu12/work --methods self_training --variant ema_soft --jobs 2 -- \
   train.cpu_threads=1 method.self_training.ema_decay=0.999 method.self_training.labels=soft

# the result JSONs copied here, then:
R=benchmarks/results/issue12_cpu_seed1
python benchmarks/amazon_pairs.py --table-only --out $R
# session 18, commit 5b44370: the label-free criterion `atc` added to every result JSON from its finished run
# (adapt evaluate --unlabeled on the same target text and sample; no retraining; the other criteria kept)
python benchmarks/amazon_rescore.py --results $R --data-dir ../shared/data/amazon_multidomain
python benchmarks/amazon_label_free.py --results $R --methods source_only,self_training --out $R/label_free.json
# session 19, commit 973b46f (a worktree at /tmp/snap19), two trainings at a time with one thread each: the same-size
# student of each pair's seed-1 self-training run on the 10 pairs left (E:B's ran above; E:D's is the one in
# benchmarks/results/issue12_cpu_ED/distill, copied here); the result JSONs copied here, then the table again and,
# at commit 12056b2, the analyses
python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain --pairs all --seeds 1 --resume \
   --out /tmp/cpu12/results --work /tmp/cpu12/work --methods distill --teachers self_training --jobs 2 -- train.cpu_threads=1
python benchmarks/amazon_pairs.py --table-only --out $R
python benchmarks/amazon_label_free.py --results $R --methods source_only,self_training,distill --out $R/label_free_with_distill.json
python benchmarks/amazon_targets.py --results $R --recommended self_training --student distill --out $R/targets.json
# session 19, commit 5a56b92: each self-training round's pseudo-labels against the target labels the runs never saw
# (explains the gains and losses; chooses nothing)
python benchmarks/amazon_pseudo_labels.py --results $R --data-dir ../shared/data/amazon_multidomain \
    --methods self_training,self_training+ema_soft --out $R/pseudo_labels.json
