"""Write the config file of every world of a benchmark override (read over config.yaml, as the
benchmark command does) to a folder, and print each world's run name, one a line: for running
the worlds side by side (bench/select_on_device.sh, bench/benchmark_on_device.sh).

    python bench/write_worlds.py configs/benchmark.yaml results/benchmark/benchmark/worlds/benchmark
"""
import sys
from pathlib import Path

import yaml

from gracefill import benchmark as bm
from gracefill import config


def main(override: str, folder: str) -> None:
    raw = bm.merge(config.read("config.yaml"), config.read(override))
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, world in bm.world_configs(raw, config.validate(raw)["benchmark"]["worlds"]).items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump(world, sort_keys=False))
        print(world["run"])


if __name__ == "__main__":
    main(*sys.argv[1:])
