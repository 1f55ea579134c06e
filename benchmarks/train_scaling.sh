#!/bin/bash
# 1 vs 2 GPU training throughput, edge-64 on the emoji zip, 64 images per GPU (weak scaling).
# Usage: DATA=path/to/emoji-64.zip OUT=results-dir T=seconds-per-run bash benchmarks/train_scaling.sh
# Images/s come from each run's metrics.jsonl (steady window after 5 kimg); see
# benchmarks/results/train-scaling-edge-64-h200x2.json for the method and the numbers.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
A="--preset edge-64 --d-channel-max 256 --kimg 5000 --log-every 20 --sample-kimg 5000 --checkpoint-kimg 5000 --no-data-cache"
timeout -s INT ${T:-70} python3 -m cips_edge.train ${DATA:-emoji-64.zip} --out ${RUNS:-/tmp/cips-scaling}/r1 --batch 64 $A > ${OUT:-.}/gpu1.log 2>&1
timeout -s INT ${T:-70} torchrun --standalone --nproc_per_node 2 -m cips_edge.train ${DATA:-emoji-64.zip} --out ${RUNS:-/tmp/cips-scaling}/r2 --batch 128 $A > ${OUT:-.}/gpu2.log 2>&1
cp ${RUNS:-/tmp/cips-scaling}/r1/metrics.jsonl ${OUT:-.}/gpu1.jsonl; cp ${RUNS:-/tmp/cips-scaling}/r2/metrics.jsonl ${OUT:-.}/gpu2.jsonl
for f in ${OUT:-.}/gpu1.jsonl ${OUT:-.}/gpu2.jsonl; do echo $f; tail -4 $f | cut -c1-220; done
tail -3 ${OUT:-.}/gpu2.log
