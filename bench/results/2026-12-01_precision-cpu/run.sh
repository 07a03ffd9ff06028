#!/usr/bin/env bash
# fp32 vs bf16 on this CPU: the default run, 3 seeds each, interleaved, one at a time.
cd "$(dirname "$0")/../.."
. .venv/bin/activate
for seed in 0 1 2; do
  for precision in fp32 bf16; do
    out=runs/prec/$precision-$seed
    start=$(date +%s.%N)
    ganforge train --precision $precision --seed $seed --out $out --overwrite --no-progress > runs/prec/$precision-$seed.log 2>&1
    end=$(date +%s.%N)
    echo "$precision $seed $(echo "$end - $start" | bc)" >> runs/prec/wall.txt
  done
done
echo done >> runs/prec/wall.txt
