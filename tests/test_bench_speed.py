"""tools/bench_speed.py: its table (the runs themselves are the bench)."""

from __future__ import annotations

import bench_speed


def test_table_shows_the_two_worker_speedup_and_the_ratios_to_zstd():
    runs = bench_speed.ModelRuns("m", original=4000, weight_mb=4.0, runs={
        method: bench_speed.Run(size=1000, encode_s=2.0, decode_s=1.0, decode_cpu_s=1.0)
        for method in bench_speed.METHODS})
    runs.runs["onnxz_lossy_2"] = bench_speed.Run(size=1000, encode_s=1.25, decode_s=0.5,
                                                 decode_cpu_s=1.1)
    runs.runs["zstd3"] = bench_speed.Run(size=3000, encode_s=0.5, decode_s=0.25,
                                         decode_cpu_s=0.25)
    runs.runs["zstd3_durable"] = bench_speed.Run(size=3000, encode_s=0.5, decode_s=0.4,
                                                 decode_cpu_s=0.25)
    lines = bench_speed.table([runs], markdown=True).splitlines()
    assert "2 workers ÷ 1 (enc / dec)" in lines[0]
    lossy_2 = next(line for line in lines if "onnxz lossy, 2 workers" in line)
    assert "| 1.60× / 2.00× |" in lossy_2 and "| 0.500× | 0.800× |" in lossy_2
    lossy_1 = next(line for line in lines if "onnxz lossy, 1 worker" in line)
    assert "| 0.250× | 0.400× | 4 |  |" in lossy_1  # no speedup for one worker
