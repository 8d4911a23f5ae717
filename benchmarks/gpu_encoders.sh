#!/usr/bin/env bash
# GPU figures for issue 12 (run on a CUDA machine from the repository root, after `make install` with the
# CUDA build of torch; see README "GPU machines"). Prints, per encoder, end-to-end and forward-only
# patches/s in bf16 and fp32 (full depth), the three-encoder run on one grid, and HIPT's figure (goal
# >= 5,000 patches/s end to end on an H100). Then the CUDA tests (pytest -m gpu).
set -euo pipefail
PY=${PY:-.venv/bin/python}
ARGS=(--device cuda --size 16384 --slides 2 --repeat 4 --rounds 1)
for precision in bf16 fp32; do
  for enc in uni_v1 uni_v2 virchow virchow2 hoptimus0 hoptimus1 gigapath phikon phikon_v2 conch_v15 conch_v1 \
             kaiko-vits16 kaiko-vits8 kaiko-vitb16 kaiko-vitb8 kaiko-vitl14 lunit-vits8; do
    echo "== $enc $precision"
    "$PY" benchmarks/bench_features.py "${ARGS[@]}" --precision "$precision" --encoders "$enc" --each | tail -4
  done
  echo "== three encoders on one 256-px grid vs separate runs ($precision)"
  "$PY" benchmarks/bench_features.py "${ARGS[@]}" --precision "$precision" --encoders uni_v1,gigapath,kaiko-vitb16 --each | tail -6
  echo "== HIPT ($precision)"
  "$PY" benchmarks/bench_features.py "${ARGS[@]}" --precision "$precision" --repeat 8 | tail -3
done
"$PY" -m pytest -m gpu -q tests/test_pathology_encoders.py tests/test_pathology_extract.py
