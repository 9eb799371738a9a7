"""Does Ray hand this machine's GPU to an actor? One `num_gpus=1` actor says what it sees, and how long Ray took.

    python benchmarks/ray_check.py                 # joins the running cluster (after `ray start --head`)
    python benchmarks/ray_check.py --local         # ray.init() starts a local instance itself, as the driver does
                                                   # when ray_address is None

Prints one JSON line per measurement: the actor's CUDA_VISIBLE_DEVICES, ray.get_gpu_ids(), torch.cuda.is_available()
and device name; seconds for ray.init, for the actor's first answer (its process start and torch import included),
and the round trip of a no-op call (N calls one after another: what handing out one task costs at least).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", action="store_true", help="ray.init() with no address: start a local instance")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--timeout", type=float, default=240, help="seconds to wait for the actor's first answer")
    args = p.parse_args(argv)

    import ray

    t0 = time.time()
    if args.local:
        ray.init(include_dashboard=False, log_to_driver=True)
    else:
        ray.init(address="auto", log_to_driver=True)
    init_s = time.time() - t0
    print(json.dumps({"ray": ray.__version__, "mode": "local" if args.local else "address=auto",
                      "init_s": round(init_s, 2), "cluster_resources": ray.cluster_resources()}), flush=True)

    @ray.remote(num_gpus=1)
    class Probe:
        def sees(self):
            import torch

            out = {"pid": os.getpid(), "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                   "ray.get_gpu_ids": ray.get_gpu_ids(), "torch": torch.__version__,
                   "cuda_available": torch.cuda.is_available(), "device_count": torch.cuda.device_count()}
            if out["cuda_available"]:
                out["device_name"] = torch.cuda.get_device_name(0)
                x = torch.ones(1024, 1024, device="cuda")
                out["matmul_ok"] = bool((x @ x)[0, 0].item() == 1024)
            return out

        def noop(self, i):
            return i

    t1 = time.time()
    probe = Probe.remote()
    sees = ray.get(probe.sees.remote(), timeout=args.timeout)
    first_s = time.time() - t1
    rtts = []
    for i in range(args.calls):
        t = time.perf_counter()
        assert ray.get(probe.noop.remote(i), timeout=60) == i
        rtts.append(time.perf_counter() - t)
    print(json.dumps({"actor": sees, "actor_first_answer_s": round(first_s, 2), "noop_calls": args.calls,
                      "noop_rtt_ms_mean": round(statistics.mean(rtts) * 1e3, 3),
                      "noop_rtt_ms_median": round(statistics.median(rtts) * 1e3, 3),
                      "noop_rtt_ms_max": round(max(rtts) * 1e3, 3)}), flush=True)
    ray.kill(probe)
    t2 = time.time()
    ray.shutdown()
    print(json.dumps({"shutdown_s": round(time.time() - t2, 2), "total_s": round(time.time() - t0, 2)}), flush=True)
    ok = sees["cuda_available"] and sees["ray.get_gpu_ids"] and sees.get("matmul_ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
