# Issue 12's sweep, first lease (2026-11-30): one NVIDIA H200 lent through the `device` tool for 15 minutes in all,
# torch 2.11.0+cu130 of the machine's image, transformers 5.24.0 / peft 0.21.2 / datasets 5.2.0 carried as wheels,
# bf16 (`precision: auto`), CUDA MPS on, 18 trainings at a time with one CPU thread each.
#
# The code that ran is commit 812ac25 (benchmarks/gpu_lease.sh added to 11f24b0; adapt/ and benchmarks/amazon_pairs.py
# are the same in both). The result JSONs say `git_commit: 11f24b0…`: the machine's copy of .git was the session's
# starting commit, while the tree it ran was the working tree at the call.
#
# Call 1 (61 s): wheels, data, the first part of the checkpoint; MPS; a smoke test (2 of 3 tiny-model tests passed:
#   tests/test_distill.py::test_distilled_student_learns_the_teacher failed on the GPU; see docs/benchmarks.md).
bash benchmarks/gpu_lease.sh setup                     # carry .lease
# Call 2 (561 s): the second part of the checkpoint (sha256 checked), then the two chains of gpu_lease.sh for 557 s.
# Done: source_only and self_training seeds 1-3 (12 + 36 trainings), self_training+ema_soft seeds 1-3 (36),
# distill (student of the 3-seed self-training ensemble) 30 of 36, distill+half 24 of 36. Progress: lease_progress.txt.
DEADLINE=555 bash benchmarks/gpu_lease.sh sweep        # carry .lease2
# Call 3 (144 s, the lease's last minutes): the same command. The machine's repo copy had lost the result JSONs of
# call 2 (only paths outside the repo survive between calls; gpu_lease.sh now keeps results under /tmp), so the runner
# re-scored the finished source_only models (identical numbers), refused to retrain the finished self-training runs,
# and finished 6 distill and 8 distill+half runs (2 of them resumed from their first-epoch checkpoint). Those 14 JSONs
# and run folders were taken from call 3, everything else from call 2. distill+half E-D, E-K, K-B, K-E seed 3 are missing.
DEADLINE=140 bash benchmarks/gpu_lease.sh sweep

# Here, on the returned files (run folders unpacked at /tmp/lease/work, their path on the GPU machine):
R=benchmarks/results/amazon_pairs_v2
python benchmarks/amazon_pairs.py --table-only --out $R
# The pre-registered choice (docs/benchmarks.md): the stack was not reached, so no candidate is chosen.
python benchmarks/amazon_targets.py --results $R --choose self_training,self_training+ema_soft,dapt-then-self_training,distill \
    --choose-by source_dev --out $R/choice.json
# Each measured candidate against the bars on its 3 seeds (the recommended-recipe bars ask for 5: --seeds 3 here
# says what 3 show; it chooses nothing).
for c in self_training self_training+ema_soft distill; do
    python benchmarks/amazon_targets.py --results $R --recommended $c --seeds 3 --work /tmp/lease/work \
        --student distill --half-student distill+half \
        --candidates source_only,self_training,self_training+ema_soft,distill --out $R/targets_3seeds_$c.json
done
python benchmarks/amazon_label_free.py --results $R --out $R/label_free.json
python benchmarks/amazon_label_free.py --results $R --methods source_only,self_training,self_training+ema_soft,distill \
    --out $R/label_free_four.json
python benchmarks/amazon_pseudo_labels.py --results $R --data-dir ../shared/data/amazon_multidomain \
    --methods self_training,self_training+ema_soft --out $R/pseudo_labels.json

# Later the same session, commit 'amazon_label_free: seed_agreement': the sweep-level criterion `seed_agreement`
# (each run's agreement with its other seeds on the target test texts' predicted classes; labels unread), added to
# the analyses above after their results were in. The run folders are the ones unpacked at /tmp/lease/work.
python benchmarks/amazon_label_free.py --results $R --out $R/label_free.json
python benchmarks/amazon_label_free.py --results $R --methods source_only,self_training,self_training+ema_soft,distill \
    --out $R/label_free_four.json
# Only the settings whose seeds train independently (a student's seeds share one teacher):
python benchmarks/amazon_label_free.py --results $R --methods source_only,self_training,self_training+ema_soft \
    --out $R/label_free_independent_seeds.json
for c in self_training self_training+ema_soft distill; do
    python benchmarks/amazon_targets.py --results $R --recommended $c --seeds 3 --work /tmp/lease/work \
        --student distill --half-student distill+half \
        --candidates source_only,self_training,self_training+ema_soft,distill --out $R/targets_3seeds_$c.json
done

# ----------------------------------------------------------------------------------------------------------------
# Second lease (2026-11-30, a new session): one H200 again, 15 minutes in all; the same image (torch 2.11.0+cu130).
# The code that ran is commit 43dc859 (the (target, seed) MLM lock in amazon_pairs.py and lease 2's chains in
# gpu_lease.sh). The result JSONs say `git_commit: c1a3782…`, the session's starting commit, for the same reason as
# above. Here, first: `bash benchmarks/gpu_lease.sh build` (unchanged from lease 1).
# Call 1 (67 s): setup; smoke test 2 of 3 passed. tests/test_distill.py::test_distilled_student_learns_the_teacher
#   failed on {'device': 'cuda:0'} != {'device': 'cuda'}: the student was timed on its parameters' device name, the
#   teachers on the accelerator's; fixed in 9dae8c6.
bash benchmarks/gpu_lease.sh setup                     # carry .lease
# Call 2 (556 s): chain A dapt, dapt>self_training seeds 1-3; chain B source_only, dapt, dapt>self_training seeds 4-5,
# then self_training seeds 4-5 (progress: lease2_progress.txt). 20 MLM phases (one per target and seed), reused by
# the 40 other dapt runs.
DEADLINE=552 bash benchmarks/gpu_lease.sh sweep        # carry .lease2
# Call 3 (195 s): the same; finished self_training seeds 4-5 but for three runs (D:E seeds 4 and 5, K:D seed 4) that
# call 2's deadline stopped after their report.json and before their result file: the runner refused to retrain them
# ("already holds a finished run"). self_training+ema_soft seeds 4-5 started, none finished. Chain A, with nothing left,
# crashed writing heatmap.png at the same moment as chain B (one temporary name for both; d373a7f).
DEADLINE=190 bash benchmarks/gpu_lease.sh sweep
# The JSONs and run folders (no weights) are from call 3's results.tgz and work.tgz, run folders unpacked at
# /tmp/lease/work beside lease 1's. The three results above were recorded here from their run folders by the runner,
# which now records a finished run with the same recipe instead of refusing it (134069a); no training ran:
python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain --pairs D:E,K:D --resume \
    --work /tmp/lease/work --out $R --seeds 4,5 --methods self_training -- train.cpu_threads=1

python benchmarks/amazon_pairs.py --table-only --out $R
# The registered choice (seeds 1-3 of the four candidates, mean source dev macro-F1): distill.
python benchmarks/amazon_targets.py --results $R --choose self_training,self_training+ema_soft,dapt-then-self_training,distill \
    --choose-by source_dev --out $R/choice.json
C=source_only,self_training,self_training+ema_soft,dapt-then-self_training,distill
# The chosen setting against the bars (its seeds 4-5 were not run: the first bar says "not measured").
python benchmarks/amazon_targets.py --results $R --recommended distill --work /tmp/lease/work --student distill \
    --half-student distill+half --candidates $C --out $R/targets.json
# Each other candidate: --seeds is the least number of seeds a pair needs; every seed present is used.
python benchmarks/amazon_targets.py --results $R --recommended self_training --work /tmp/lease/work --student distill \
    --half-student distill+half --candidates $C --out $R/targets_5seeds_self_training.json
python benchmarks/amazon_targets.py --results $R --recommended dapt-then-self_training --work /tmp/lease/work \
    --student distill --half-student distill+half --candidates $C --out $R/targets_5seeds_dapt-then-self_training.json
for c in self_training+ema_soft distill; do
    python benchmarks/amazon_targets.py --results $R --recommended $c --seeds 3 --work /tmp/lease/work \
        --student distill --half-student distill+half --candidates $C --out $R/targets_3seeds_$c.json
done
# Label-free criteria: all 344 runs; the registered candidates with source-only; the settings whose seeds train
# independently; and the 120 runs of the two settings first run in this lease, after seed agreement was adopted.
# (label_free_four.json, lease 1's four settings, is superseded by label_free_candidates.json.)
python benchmarks/amazon_label_free.py --results $R --out $R/label_free.json
python benchmarks/amazon_label_free.py --results $R --methods $C --out $R/label_free_candidates.json
python benchmarks/amazon_label_free.py --results $R \
    --methods source_only,self_training,self_training+ema_soft,dapt,dapt-then-self_training \
    --out $R/label_free_independent_seeds.json
python benchmarks/amazon_label_free.py --results $R --methods dapt,dapt-then-self_training --out $R/label_free_lease2_methods.json
python benchmarks/amazon_pseudo_labels.py --results $R --data-dir ../shared/data/amazon_multidomain \
    --methods self_training,self_training+ema_soft,dapt-then-self_training --out $R/pseudo_labels.json
# Source-only models only (12 pairs x 5 seeds): does seed agreement tell which target a source model carries to?
python benchmarks/amazon_label_free.py --results $R --methods source_only --out $R/label_free_source_only.json
