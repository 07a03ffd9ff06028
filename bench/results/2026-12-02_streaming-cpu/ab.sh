#!/bin/bash
# A/B: dcgan-28 streamed from a 4 GB uint8 .npy (--data-memory 1: auto streams it) vs resident (200,000 images)
. .venv/bin/activate
F="--model dcgan --iterations 200 --batch-size 64 --fid-samples 0 --no-progress --log-every 50 --sample-every 100000 --ckpt-every 100000 --data-memory 1"
for pair in 1 2 3; do
  python -m ganforge.bench.peak_memory --out DATA/ab-stream-$pair.json -- ganforge train --dataset npy --data-path DATA/big4g.npy $F --out DATA/ab-stream-$pair > /dev/null 2>&1
  python -m ganforge.bench.peak_memory --out DATA/ab-resident-$pair.json -- ganforge train --dataset npy --data-path DATA/resident200k.npy $F --out DATA/ab-resident-$pair > /dev/null 2>&1
done
