"""A rerank job's start-up: from the process's start to its model loaded, with the weights cold.

Runs ``python -m rankvideo.rerank`` on one synthetic video, once per code version and trial, in
turns (A, B, A, B, ...), and reads the job's log: process start -> ``loading`` (the imports before the
load) -> ``loaded`` (the load) -> the loop's start. ``--drop-caches`` empties the page cache before
each run (root only; ``/proc/sys/vm/drop_caches``), so the weights come from the disk as on a job's
first read of them from a cluster's file system; without it the files are whatever the cache holds.

Usage::

    python benchmarks/start_up.py --model FOLDER --code old=/path/to/old --code new=. --trials 3 --drop-caches \\
        --out DIR

Writes ``DIR/start_up_<card>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAMP = "%Y-%m-%d %H:%M:%S,%f"


def _stamp(line: str) -> float | None:
    try:
        return dt.datetime.strptime(line[:23], STAMP).timestamp()
    except ValueError:
        return None


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def one_run(code: Path, model: Path, work: Path, device: str, out: Path) -> dict:
    """One CLI process; seconds from its start to each phase."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "rankvideo.rerank", "--model", str(model), "--video2queries",
               str(work / "video2queries.json"), "--query-mapping", str(work / "queries.tsv"), "--video-dir",
               str(work / "videos"), "--output-dir", str(out), "--no-progress", "--fps", "2", "--max-frames", "4",
               "--tokens-per-frame", "4", "--device", device]
    start = time.time()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
    end = time.time()
    marks = {"loading": " INFO rankvideo.models: loading ", "loaded": " INFO rankvideo.models: loaded ",
             "loop": " INFO rankvideo.scoring.rerank: "}
    at: dict = {}
    for line in proc.stderr.splitlines():
        for name, text in marks.items():
            if name not in at and text in line:
                at[name] = _stamp(line)
    result = {"rc": proc.returncode, "wall_s": end - start}
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-1500:]
    previous = start
    for name in ("loading", "loaded", "loop"):
        if at.get(name) is not None:
            result[f"{name}_s"] = at[name] - start
            result[f"{name}_phase_s"] = at[name] - previous
            previous = at[name]
    return result


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"# Rerank job start-up on {report['card']}", "",
             f"- date: {report['date']}; model {report['model']} ({report['model_gib']:.2f} GiB of weights); "
             f"device {report['device']}; page cache dropped before each run: {report['dropped']}",
             f"- produced by `benchmarks/start_up.py` ({' '.join(report['argv'])})", "",
             "| code | runs | imports before the load, s | load, s | start to loaded, s | whole process, s |",
             "|---|---|---|---|---|---|"]
    for name, runs in report["runs"].items():
        ok = [r for r in runs if r["rc"] == 0 and "loaded_s" in r]

        def median(key):
            values = [r[key] for r in ok if key in r]
            return f"{statistics.median(values):.2f}" if values else "-"

        lines.append(f"| {name} | {len(ok)}/{len(runs)} | {median('loading_phase_s')} | {median('loaded_phase_s')} | "
                     f"{median('loaded_s')} | {median('wall_s')} |")
    lines += ["", "Medians over the runs; every run is in the JSON file."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder (safetensors)")
    parser.add_argument("--code", action="append", required=True, help="NAME=DIR: a code version to run")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from rankvideo.data import formats
    from rankvideo.demo.synthetic import SyntheticConfig, generate

    codes = dict(item.split("=", 1) for item in args.code)
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    card = "cpu"
    if device.startswith("cuda"):
        import torch

        card = torch.cuda.get_device_name(0).lower().replace(" ", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rankvideo-start-up-") as scratch:
        work = Path(scratch)
        generate(SyntheticConfig.from_dict({"n_videos": 4, "n_test_queries": 1, "n_train_queries": 1}), work)
        video_id = sorted((work / "videos").glob("*.mp4"))[0].stem
        formats.write_queries(work / "queries.tsv", {"q1": "a red circle moving left"})
        formats.write_json(work / "video2queries.json", {video_id: ["q1"]})
        gib = sum(p.stat().st_size for p in args.model.glob("*.safetensors")) / 2**30
        report = {"card": card, "device": device, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "argv": sys.argv[1:], "model": str(args.model), "model_gib": gib, "dropped": None,
                  "runs": {name: [] for name in codes}}
        for trial in range(args.trials):
            for name, code in codes.items():
                dropped = drop_caches() if args.drop_caches else False
                report["dropped"] = dropped if report["dropped"] in (None, dropped) else "some runs"
                result = one_run(Path(code).resolve(), args.model.resolve(), work, device, work / f"out_{name}_{trial}")
                report["runs"][name].append(result)
                print(name, trial, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()
                                               if k != "stderr_tail"}), flush=True)
                if result["rc"] != 0:
                    print(result.get("stderr_tail", ""), file=sys.stderr)
        (args.out / f"start_up_{card}.json").write_text(json.dumps(report, indent=1))
        write_markdown(report, args.out / f"start_up_{card}.md")
    print((args.out / f"start_up_{card}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
