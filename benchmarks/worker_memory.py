"""Memory of N Ray Train-like workers on one node: each decoding its own dataset copy (before)
vs reading the driver's decoded splits from Ray's object store (now).

    python benchmarks/worker_memory.py [--workers 4] [--image-size 96]

Each worker is a Ray actor that holds the trial's ImageSplits as the training loop does, then
reports its memory from /proc/self/smaps_rollup (Linux): RSS counts shared pages in every
process that maps them; USS (private pages) is what the worker alone costs; PSS splits shared
pages between the processes sharing them, so PSS summed over workers is their true total.
Both variants run side by side in one Ray instance; medians of three rounds.
"""

import argparse
import statistics
import sys
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.datasets import DataKey, decode_datasets, share, size_in_bytes  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import ImageSplits, load_dataset  # noqa: E402


def memory_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0])
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


@ray.remote(num_cpus=0)
class Worker:
    def baseline(self) -> dict[str, int]:
        import torch  # noqa: F401  (what every training worker has loaded)

        return memory_kib()

    def load_own_copy(self, config: dict) -> dict[str, int]:
        trial = TrialConfig.from_dict(config)
        self.data = load_dataset(trial.dataset, trial.image_size, trial.seed, trial.data_root)
        self.data.train_images.sum()  # touch every page, as an epoch does
        return memory_kib()

    def read_shared(self, reference: list) -> dict[str, int]:
        self.data = ImageSplits.from_arrays(ray.get(reference[0]))
        self.data.train_images.sum()
        return memory_kib()


def total_mib(reports: list[dict[str, int]], baselines: list[dict[str, int]], key: str) -> float:
    return sum(report[key] - base[key] for report, base in zip(reports, baselines, strict=True)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = TrialConfig.from_dict({"dataset": "shapes", "image_size": args.image_size})
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
    decoded = decode_datasets([config])
    data_mib = size_in_bytes(decoded[DataKey.of(config)]) / 2**20
    reference = share(decoded)[DataKey.of(config)]
    pss: dict[str, list[float]] = {"own copy": [], "object store": []}
    uss: dict[str, list[float]] = {"own copy": [], "object store": []}
    for _ in range(args.rounds):
        for variant in pss:
            workers = [Worker.remote() for _ in range(args.workers)]
            baselines = ray.get([worker.baseline.remote() for worker in workers])
            if variant == "own copy":
                reports = ray.get([worker.load_own_copy.remote(config.to_dict()) for worker in workers])
            else:
                reports = ray.get([worker.read_shared.remote([reference]) for worker in workers])
            pss[variant].append(total_mib(reports, baselines, "pss"))
            uss[variant].append(total_mib(reports, baselines, "uss"))
            print(f"{variant:>12}: {args.workers} workers hold {pss[variant][-1]:7.1f} MiB PSS "
                  f"(USS {uss[variant][-1]:7.1f}, RSS {total_mib(reports, baselines, 'rss'):7.1f}) "
                  "above their baseline")
            for worker in workers:
                ray.kill(worker)
    own = statistics.median(pss["own copy"])
    shared = statistics.median(uss["object store"]) + data_mib  # private pages + the one stored copy
    print(f"\nshapes at {args.image_size} px, {data_mib:.1f} MiB of splits, {args.workers} workers on one "
          f"node (medians): own copies {own:.1f} MiB; object store {shared:.1f} MiB (workers' private "
          f"{shared - data_mib:.1f} + one stored copy {data_mib:.1f}): {own / shared:.1f}x less")
    ray.shutdown()


if __name__ == "__main__":
    main()
