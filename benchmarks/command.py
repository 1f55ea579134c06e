"""The whole command a newcomer runs first, `cips render --seed 7 --size 1024`, timed as a user sees it:
a fresh process each run (wall time from spawn to exit, median of --runs after one untimed run that
warms the disk cache), with the command's own `--verbose` split (start-up to the render call, session,
render, write; `outside` is the wall time the command cannot see: the interpreter starting and the
process leaving), and where the time goes in a fresh process of its own (imports, opening the model,
the render, writing the PNG). Also checks that the command prints nothing on stderr but its own lines
(no provider warnings). Writes benchmarks/results/command-<machine>.json.

    python benchmarks/command.py --device cuda          # the GPU machine (benchmarks/on_gpu.sh)
    python benchmarks/command.py --device cpu --size 64 --ab-pythonpath /tmp/other-typer
    python benchmarks/command.py --device cuda --profile   # + ONNX Runtime's profile of renders 1 and 2
    python benchmarks/command.py --device cuda --ab-env CIPS_CUDA_EARLY=0

--ab-pythonpath DIR times the command a second way in the same run, with DIR first on PYTHONPATH (a
folder where `pip install --target` put another version of a dependency), A and B in turn, and reports
the ratio of each pair; --ab-env NAME=VALUE does the same with an environment variable set for B (e.g.
CIPS_CUDA_EARLY=0), and both together make one B. --profile runs the split process with ONNX Runtime's
profiler on every session and sums its node times per operator for the first render and the second, to
show what only the first one pays (on CUDA the node times are the host's: launches, first-use loading,
allocation).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# One fresh process: the stages of `cips render` done by hand, each timed (seconds since the process
# started for the first: the interpreter's own start-up is measured by the parent, as the difference).
SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import onnxruntime
ta = time.perf_counter()
size = int(sys.argv[3])
profile = len(sys.argv) > 4 and sys.argv[4] == "profile"
profiled = []
if profile:
    Session = onnxruntime.InferenceSession
    class ProfiledSession(Session):
        def __init__(self, source, options=None, *args, **kwargs):
            options = options or onnxruntime.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = f"{sys.argv[2]}-session{len(profiled)}"
            super().__init__(source, options, *args, **kwargs)
            self.initialized = time.perf_counter()  # the profile's session_initialization ends here
            profiled.append(self)
    onnxruntime.InferenceSession = ProfiledSession
from cips_edge import cli
from cips_edge.runtime import CIPSModel, latent_for_seed, packaged_model, render_image
from cips_edge.runtime.image import write_output
t1 = time.perf_counter()
sessions = []
open_session = CIPSModel._session
def timed_session(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return open_session(self, *args, **kwargs)
    finally:
        sessions.append(round(1000 * (time.perf_counter() - start), 1))
CIPSModel._session = timed_session
model = CIPSModel(packaged_model(), device=sys.argv[1])
t2 = time.perf_counter()
rgb = render_image(model, latent_for_seed(7, model.style_dim), size, size)
t3 = time.perf_counter()
rgb = render_image(model, latent_for_seed(8, model.style_dim), size, size)
t3b = time.perf_counter()
write_output(sys.argv[2], rgb)
t4 = time.perf_counter()
print(json.dumps({"import_onnxruntime": ta - t0, "imports": t1 - t0, "session": t2 - t1, "render": t3 - t2,
                  "second_render": t3b - t3, "png": t4 - t3b, "sessions_ms": sessions,
                  "provider": model.provider, "precision": model.precision, "grid": model.grid_ready,
                  "profiles": [[session.end_profiling(), session.initialized] for session in profiled],
                  "renders": [[t2, t3], [t3, t3b]]}))
"""


TIME_LINE = re.compile(r"time: start-up (\d+) ms, session (\d+) ms, render (\d+) ms, write (\d+) ms, total (\d+) ms")


def verbose_split(stderr: str, wall_s: float) -> dict:
    """The command's own `time:` line as numbers (ms), and the wall time outside it."""
    found = TIME_LINE.search(stderr)
    if found is None:
        raise SystemExit(f"no time line in the command's output: {stderr.strip()[-300:]}")
    split = dict(zip(("start_up", "session", "render", "write", "total"), map(float, found.groups())))
    split["outside"] = 1000 * wall_s - split["total"]
    return split


def median_split(splits: list[dict]) -> dict:
    return {key: round(statistics.median(s[key] for s in splits), 1) for key in splits[0]}


def profile_by_render(profiles: list, renders: list) -> dict:
    """ONNX Runtime's profiles (one JSON file per session, with the perf_counter time at which the session
    finished initializing) summed per operator over each render: the first, then the second. A session's
    profile clock is tied to perf_counter by the end of its session_initialization event; each model_run
    falls in the render whose window holds its start."""
    out = [{"runs": 0, "run_ms": 0.0, "ops_ms": {}} for _ in renders]
    inits = []
    for path, initialized in profiles:
        events = json.loads(Path(path).read_text())
        init = next(e for e in events if e.get("name") == "session_initialization")
        inits.append(round(init["dur"] / 1000, 1))
        offset = initialized - (init["ts"] + init["dur"]) / 1e6  # profile microseconds -> perf_counter seconds
        runs = []
        for e in events:
            if e.get("name") == "model_run":
                start = offset + e["ts"] / 1e6
                k = next((i for i, (a, b) in enumerate(renders) if a <= start <= b), None)
                runs.append((e["ts"], e["ts"] + e["dur"], k))
                if k is not None:
                    out[k]["runs"] += 1
                    out[k]["run_ms"] += e["dur"] / 1000
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            k = next((k for start, end, k in runs if start <= e["ts"] <= end), None)
            if k is None:
                continue
            op = e.get("args", {}).get("op_name", "?")
            out[k]["ops_ms"][op] = out[k]["ops_ms"].get(op, 0.0) + e["dur"] / 1000
    for render in out:
        render["run_ms"] = round(render["run_ms"], 2)
        render["ops_ms"] = {op: round(ms, 2) for op, ms in sorted(render["ops_ms"].items(), key=lambda kv: -kv[1])}
    return {"session_initialization_ms": inits, "first_render": out[0], "second_render": out[1]}


def python(no_site: bool) -> tuple[list[str], dict]:
    """How to start Python for the runs: as it is, or (no_site) with -S and on PYTHONPATH the site-packages
    folders and the folders their .pth files name, so the same packages load without the .pth files'
    import hooks, as in a fresh virtual environment that holds only what cips needs."""
    env = dict(os.environ)
    if not no_site:
        return [sys.executable], env
    paths = []
    for folder in site.getsitepackages():
        paths.append(folder)
        for pth in sorted(Path(folder).glob("*.pth")):
            lines = [line.strip() for line in pth.read_text(errors="replace").splitlines()]
            paths += [str(Path(folder) / line) for line in lines  # relative lines are relative to the folder
                      if line and not line.startswith(("#", "import ", "import\t")) and (Path(folder) / line).is_dir()]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), *paths]))
    return [sys.executable, "-S"], env


def b_environment(env: dict, ab_pythonpath: Path | None, ab_env: dict) -> dict | None:
    """B's environment: A's with ab_pythonpath first on PYTHONPATH and ab_env's variables set; None when
    neither asks for a B."""
    if ab_pythonpath is None and not ab_env:
        return None
    b = {**env, **ab_env}
    if ab_pythonpath is not None:
        b["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ab_pythonpath), b.get("PYTHONPATH")]))
    return b


def timed_runs(command: list[str], runs: int, cwd: Path, b_env: dict | None, env: dict) -> dict:
    """`runs` timed runs after one untimed one; with b_env, B runs in that environment, A and B in turn."""
    ways = {"a": dict(env)}
    if b_env is not None:
        ways["b"] = b_env
    walls = {way: [] for way in ways}
    splits = {way: [] for way in ways}
    stderr = ""
    for k in range(runs + 1):
        for way, way_env in ways.items():
            start = time.perf_counter()
            r = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=way_env)
            wall = time.perf_counter() - start
            if r.returncode != 0:
                raise SystemExit(f"the command failed ({way}, {r.returncode}): {r.stderr.strip()[-500:]}")
            if k:
                walls[way].append(wall)
                splits[way].append(verbose_split(r.stderr, wall))
            if way == "a":
                stderr = r.stderr
    out = {}
    for way in ways:
        out[way] = {"wall_s": {"median": round(statistics.median(walls[way]), 3), "min": round(min(walls[way]), 3),
                               "max": round(max(walls[way]), 3), "runs": [round(w, 3) for w in walls[way]]},
                    "verbose_split_ms": median_split(splits[way])}
    if b_env is not None:
        ratios = [a / b for a, b in zip(walls["a"], walls["b"])]
        out["a_over_b_wall"] = {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                                "max": round(max(ratios), 3)}
    own = [line for line in stderr.strip().splitlines() if not TIME_LINE.search(line)]
    return {**out, "stderr": own}


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def machine_name(device: str) -> str:
    if device == "cuda":
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True)
        name = out.stdout.strip().splitlines()[0].lower() if out.returncode == 0 and out.stdout.strip() else "gpu"
        return next((short for short in ("h200", "h100", "a100", "l40s", "l4") if short in name), name.split()[-1])
    return f"cpu{os.cpu_count()}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--size", type=int, default=1024, help="image width and height in pixels (default 1024)")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each kind (default 5)")
    p.add_argument("--ab-pythonpath", type=Path, help="time the command a second way, with this folder first "
                                                      "on PYTHONPATH (default: one way only)")
    p.add_argument("--ab-env", action="append", default=[], metavar="NAME=VALUE",
                   help="time the command a second way, with this variable set (repeatable; default: none)")
    p.add_argument("--ab-label", default="", help="what B is, for the results file")
    p.add_argument("--no-site", action="store_true", help="start Python with -S and the site-packages folders on "
                                                          "PYTHONPATH: no .pth hooks of the environment")
    p.add_argument("--profile", action="store_true", help="profile renders 1 and 2 with ONNX Runtime's profiler")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/command-<machine>.json)")
    args = p.parse_args(argv)
    if args.ab_pythonpath is not None and not args.ab_pythonpath.is_dir():
        raise SystemExit(f"--ab-pythonpath {args.ab_pythonpath}: no such folder")
    if any("=" not in item or item.startswith("=") for item in args.ab_env):
        raise SystemExit(f"--ab-env takes NAME=VALUE, got {args.ab_env}")
    ab_env = dict(item.split("=", 1) for item in args.ab_env)
    folder = Path(tempfile.mkdtemp(prefix="cips-command-"))
    png = folder / "seed7.png"
    # as the installed `cips` script starts it (`python -m cips_edge.cli` would import the module twice,
    # as __main__ and again under its name, and restart the command's own clock at the second)
    start_python, env = python(args.no_site)
    command = [*start_python, "-c", "from cips_edge.cli import main; main()", "render", "--seed", "7",
               "--size", str(args.size), "--device", args.device, "--out", str(png), "--force", "--verbose"]
    b_env = b_environment(env, args.ab_pythonpath, ab_env)
    timed = timed_runs(command, args.runs, folder, b_env, env)
    # the interpreter alone, and without `site` (the environment's .pth files: a machine with many packages
    # installed globally pays for them in every command, which a user's own virtual environment need not)
    interpreter = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(args.runs))
    bare = statistics.median(wall([sys.executable, "-S", "-c", "pass"]) for _ in range(args.runs))
    splits = []
    for k in range(args.runs):
        extra = ["profile"] if args.profile and k == args.runs - 1 else []
        r = subprocess.run([*start_python, "-c", SPLIT, args.device, str(folder / "split.png"), str(args.size),
                            *extra], capture_output=True, text=True, cwd=folder, env=env)
        if r.returncode != 0:
            raise SystemExit(f"the split run failed: {r.stderr.strip()[-500:]}")
        splits.append(json.loads(r.stdout.strip().splitlines()[-1]))
    # the profiled run is left out of the medians: the profiler slows it
    plain = [s for s in splits if not s["profiles"]] or splits
    split = {key: round(1000 * statistics.median(s[key] for s in plain), 1)
             for key in ("import_onnxruntime", "imports", "session", "render", "second_render", "png")}
    split["sessions_ms"] = plain[-1]["sessions_ms"]  # each session opened, in order (style first)
    result = {
        "benchmark": "command", "machine": machine_name(args.device), "device": args.device,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(["cips", *command[len(start_python) + 2:-4],
                                                                                     "--verbose"]),
        "no_site": args.no_site,
        "provider": splits[0]["provider"], "precision": splits[0]["precision"], "grid_graph": splits[0]["grid"],
        "wall_s": timed["a"]["wall_s"],
        "verbose_split_ms": timed["a"]["verbose_split_ms"],
        "split_ms": {"interpreter": round(1000 * interpreter, 1), "interpreter_without_site": round(1000 * bare, 1),
                     **split},
        "stderr": timed["stderr"],
        "png_bytes": png.stat().st_size,
    }
    if b_env is not None:
        result["b"] = {"pythonpath": args.ab_pythonpath and str(args.ab_pythonpath), "env": ab_env,
                       "what": args.ab_label, **timed["b"]}
        result["a_over_b_wall"] = timed["a_over_b_wall"]
    if args.profile:
        result["profile"] = profile_by_render(splits[-1]["profiles"], splits[-1]["renders"])
    print(json.dumps(result, indent=1))
    out = args.out or RESULTS / f"command-{result['machine']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
