"""The CPU benchmark suite of issue 2: our server against its peers, in one run, on one machine.

    .venv/bin/python benchmarks/run_cpu_suite.py [--port 31000] [--out-dir benchmarks/results]

Measures, with the embedded SmolLM2-135M-Instruct:
  1. our server (radix cache on), bench_serving `random` 256 in / 128 out, range ratio 1.0,
     ignore_eos, at concurrency 1 / 8 / 32 / 64 (single-stream decode tok/s = 1000 / median TPOT
     of the concurrency-1 run); every workload, ours and the peers', runs `--repeats` times and
     reports its run with the median output tok/s, so neither side gets more draws of the VM's
     drifting speed than the other;
  2. `generated-shared-prefix` scaled to CPU (8 groups x 16 prompts, 512-token system prompt,
     64-token question, 32 output tokens) with the radix cache on and on a second server with
     `--disable-radix-cache`, their runs alternating (both servers up, the idle one blocked on
     its socket), so that the VM's drift falls on both sides alike; every server gets
     `--server-args` (default `--quantization auto`);
  3. the peers on the same weights: HF transformers `generate` (bf16 and fp32; single stream and
     batch 32; bf16's batch-32 runs alternate with our concurrency-32 runs, the HF process
     loading the model while our server sits idle) and llama-cpp-python (single stream, from
     `.venv-bench` when it exists), which also runs once before our server: the VM's speed
     drifts over the run, and the two llama-cpp-python figures bracket ours.
Prints a markdown table with the ratios the issue targets and appends one JSON row (machine,
versions, git commit, date, every measurement) to `<out-dir>/cpu_suite.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_serving

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PYTHON = REPO / ".venv" / "bin" / "python"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
CONCURRENCIES = (1, 8, 32, 64)


# ----------------------------------------------------------------------------- environment


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()


def environment() -> dict[str, Any]:
    lscpu = dict(
        line.split(":", 1) for line in _run(["lscpu"]).splitlines() if ":" in line
    )  # fmt: skip
    versions = _run([str(PYTHON), "-c", "import torch, transformers; "
                     "print(torch.__version__, transformers.__version__)"]).split()  # fmt: skip
    llama = _run([str(BENCH_PYTHON), "-c", "import llama_cpp; print(llama_cpp.__version__)"])
    commit = _run(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = bool(_run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": lscpu.get("Model name", "?").strip(),
        "nproc": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": versions[0] if versions else None,
        "transformers": versions[1] if len(versions) > 1 else None,
        "llama_cpp_python": llama or None,
        "git_commit": commit + ("-dirty" if dirty else ""),
        # Other work on a 2-core machine skews every figure; a load far above 0 means re-run.
        "loadavg_1m_at_start": os.getloadavg()[0],
    }


# ----------------------------------------------------------------------------- our server


class Server:
    """`python -m radixlm.launch_server` in its own session; stopped with SIGTERM to that group."""

    def __init__(self, port: int, extra_args: list[str], log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        cmd = [str(PYTHON), "-m", "radixlm.launch_server", "--port", str(port), *extra_args]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Until GET /health_generate answers 200 (it runs one real generation)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see its log")
            try:
                with urllib.request.urlopen(self.url + "/health_generate", timeout=30) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            time.sleep(1.0)
        raise TimeoutError(f"server not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def serving_run(
    url: str, tokenizer: Any, out_file: Path, dataset_args: list[str]
) -> dict[str, Any]:
    """One run of a workload, from an empty cache (``--flush-cache``)."""
    argv = ["--backend", "radixlm", "--base-url", url, "--disable-tqdm", "--seed", "1",
            "--output-file", str(out_file), *dataset_args]  # fmt: skip
    result = bench_serving.run_benchmark(bench_serving.build_parser().parse_args(argv), tokenizer)
    return {k: v for k, v in result.items() if not isinstance(v, list)}


@dataclass(frozen=True)
class Workload:
    """The issue's shapes; `QUICK` shrinks them to check the machinery in a minute or two."""

    random_input_len: int = 256
    random_output_len: int = 128
    min_prompts: int = 4
    prompts_per_concurrency: int = 2
    gsp: tuple[int, int, int, int, int] = (8, 16, 512, 64, 32)  # groups, per group, sys, q, out

    def random_args(self, concurrency: int) -> list[str]:
        num_prompts = max(self.min_prompts, self.prompts_per_concurrency * concurrency)
        return ["--dataset-name", "random", "--random-input-len", str(self.random_input_len),
                "--random-output-len", str(self.random_output_len), "--random-range-ratio", "1.0",
                "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency),
                "--flush-cache"]  # fmt: skip

    def gsp_args(self) -> list[str]:
        groups, per_group, system_len, question_len, output_len = self.gsp
        return ["--dataset-name", "generated-shared-prefix", "--gsp-num-groups", str(groups),
                "--gsp-prompts-per-group", str(per_group), "--gsp-system-prompt-len",
                str(system_len), "--gsp-question-len", str(question_len), "--gsp-output-len",
                str(output_len), "--flush-cache"]  # fmt: skip


FULL = Workload()
QUICK = Workload(32, 8, 2, 1, (2, 4, 64, 8, 8))


def measure_server(
    args: argparse.Namespace, tokenizer: Any, hf_batch_runs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """Each workload's run with the median output tok/s (the rule the peers' runs follow).
    With ``hf_batch_runs`` (a list to fill), HF bf16's batch-32 runs alternate with our
    concurrency-32 runs, so that the VM's drift falls on both sides of that ratio alike."""
    workload = QUICK if args.quick else FULL
    repeats = 1 if args.quick else args.repeats
    runs: dict[str, list[dict[str, Any]]] = {}
    out_file = args.out_dir / "bench_serving.jsonl"
    radix = Server(args.port, args.server_args, args.out_dir / "server_radix.log")
    try:
        radix.wait_ready(args.ready_timeout)
        for conc in args.concurrencies:
            for _ in range(repeats):
                runs.setdefault(f"random_c{conc}", []).append(
                    serving_run(radix.url, tokenizer, out_file, workload.random_args(conc))
                )
                if conc == HF_BATCH and hf_batch_runs is not None:
                    cmd = hf_generate_cmd(args, "bf16", single_stream=False, repeats=1)
                    hf_batch_runs.extend(peer_rows(cmd))
        no_radix = Server(
            args.port + 1,
            [*args.server_args, "--disable-radix-cache"],
            args.out_dir / "server_no_radix.log",
        )
        try:
            no_radix.wait_ready(args.ready_timeout)
            for _ in range(repeats):  # alternating: on, off, on, off, ...
                for tag, server in (("gsp_radix", radix), ("gsp_no_radix", no_radix)):
                    runs.setdefault(tag, []).append(
                        serving_run(server.url, tokenizer, out_file, workload.gsp_args())
                    )
        finally:
            no_radix.stop()
    finally:
        radix.stop()
    return {name: median_run(rows, "output_throughput") for name, rows in runs.items()}


# ----------------------------------------------------------------------------- peers


def peer_rows(cmd: list[str]) -> list[dict[str, Any]]:
    """A peer script's JSON rows, one per run (the peer's own stderr passes through)."""
    out = subprocess.run(cmd, cwd=BENCH, stdout=subprocess.PIPE, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def by_config(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One entry per configuration `b<batch>_in<input_len>`: the run with the median output
    tok/s, plus every run's figure."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault(f"b{row['batch_size']}_in{row['input_len']}", []).append(row)
    return {key: median_run(rows, "output_tok_s") for key, rows in runs.items()}


def run_peer(cmd: list[str]) -> dict[str, dict[str, Any]]:
    return by_config(peer_rows(cmd))


def median_run(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median ``key`` (the upper one of an even count), plus every run's."""
    ranked = sorted(rows, key=lambda r: r[key])
    return ranked[len(ranked) // 2] | {f"{key}_runs": [r[key] for r in rows]}


HF_BATCH = 32  # bench_hf_generate's batch, set against our runs at this concurrency
QUICK_LLAMA_ARGS = ["--input-lens", "16", "--output-len", "8", "--repeats", "1"]


def hf_generate_cmd(
    args: argparse.Namespace,
    dtype: str,
    *,
    single_stream: bool = True,
    batch: bool = True,
    repeats: int | None = None,
) -> list[str]:
    """bench_hf_generate's command: its single-stream runs, its batch-32 runs, or both."""
    cmd = [str(PYTHON), "bench_hf_generate.py", "--dtype", dtype,
           "--repeats", str(1 if args.quick else repeats or args.repeats)]  # fmt: skip
    if args.quick:
        cmd += ["--output-len", "8", "--batch-input-len", "16"]
        cmd += ["--input-lens", "16"] if single_stream else ["--input-lens"]
    elif not single_stream:
        cmd += ["--input-lens"]  # none
    return cmd + ["--batch-size", str(HF_BATCH if batch else 0)]


def measure_llama_cpp(args: argparse.Namespace) -> dict[str, Any] | None:
    if not BENCH_PYTHON.exists():
        print(f"skipping llama-cpp-python: {BENCH_PYTHON} does not exist", file=sys.stderr)
        return None
    cmd = [str(BENCH_PYTHON), "bench_llama_cpp.py", "--repeats", str(args.repeats)]
    return run_peer(cmd + (QUICK_LLAMA_ARGS if args.quick else []))


def measure_peers(
    args: argparse.Namespace, hf_batch_runs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The peers' runs; HF bf16's batch runs only where our server's did not take them."""
    peers: dict[str, Any] = {}
    for dtype in args.hf_dtypes:
        taken = dtype == "bf16" and bool(hf_batch_runs)
        peers[f"hf_{dtype}"] = run_peer(hf_generate_cmd(args, dtype, batch=not taken))
        if taken:
            peers[f"hf_{dtype}"] |= by_config(hf_batch_runs)
    llama_cpp = measure_llama_cpp(args)
    if llama_cpp is not None:
        peers["llama_cpp"] = llama_cpp
    return peers


# ----------------------------------------------------------------------------- report


def _get(d: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def _ratio(ours: float | None, peer: float | None) -> str:
    return "–" if not ours or not peer else f"{ours / peer:.2f}×"


def report(env: dict[str, Any], server: dict[str, Any], peers: dict[str, Any]) -> str:
    """Markdown: the issue's targets first, then every raw figure."""
    c1_tpot = _get(server, "random_c1", "median_tpot_ms")
    ours_decode = 1000 / c1_tpot if c1_tpot else None
    c32 = _get(server, "random_c32", "output_throughput")
    hf_decode = _get(peers, "hf_bf16", "b1_in256", "decode_tok_s")
    hf_b32 = _get(peers, "hf_bf16", "b32_in256", "output_tok_s")
    llama = _get(peers, "llama_cpp", "b1_in256", "output_tok_s")
    llama_before = _get(peers, "llama_cpp_before", "b1_in256", "output_tok_s")
    gsp_on = _get(server, "gsp_radix", "output_throughput")
    gsp_off = _get(server, "gsp_no_radix", "output_throughput")
    hit = _get(server, "gsp_radix", "cache_hit_rate")
    ideal = _get(server, "gsp_radix", "ideal_cache_hit_rate")
    lines = [
        *(
            ["**Quick mode: reduced shapes, not the issue's workload.**", ""]
            if env.get("quick")
            else []
        ),
        f"Machine: {env['cpu']}, {env['nproc']} cores, {env['mem_gib']} GiB; python "
        f"{env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"llama-cpp-python {env['llama_cpp_python']}; commit {env['git_commit']}; {env['date']}; "
        f"radixlm flags `{env.get('server_args', '')}`; "
        f"load average {env['loadavg_1m_at_start']:.1f} at start, "
        f"{env.get('loadavg_1m_at_end', float('nan')):.1f} at end",
        "",
        "| target | radixlm | peer | ratio | goal |",
        "|---|---|---|---|---|",
        f"| single-stream decode tok/s (256 in) vs HF bf16 | {_fmt(ours_decode)} | "
        f"{_fmt(hf_decode)} | {_ratio(ours_decode, hf_decode)} | ≥ 2× |",
        f"| output tok/s at concurrency 32 vs HF bf16 batch 32 | {_fmt(c32)} | {_fmt(hf_b32)} | "
        f"{_ratio(c32, hf_b32)} | ≥ 2× |",
        f"| output tok/s at concurrency 32 vs llama-cpp-python single stream | {_fmt(c32)} | "
        f"{_fmt(llama)} | {_ratio(c32, llama)} | ≥ 4× |",
        f"| same, llama-cpp-python measured before our server | {_fmt(c32)} | "
        f"{_fmt(llama_before)} | {_ratio(c32, llama_before)} | ≥ 4× |",
        f"| generated-shared-prefix output tok/s, radix on vs off | {_fmt(gsp_on)} | "
        f"{_fmt(gsp_off)} | {_ratio(gsp_on, gsp_off)} | ≥ 3× |",
        f"| prefix hit rate vs ideal (%) | {_fmt(hit and 100 * hit)} | "
        f"{_fmt(ideal and 100 * ideal)} | "
        f"{_fmt(None if hit is None or ideal is None else 100 * (hit - ideal), '+.1f')} pts "
        f"| within 5 pts |",
        "",
        "| radixlm run | req | out tok/s | total tok/s | median TTFT ms | median TPOT ms "
        "| median E2E ms | hit % | all runs, out tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in server.items():
        hit_rate = r.get("cache_hit_rate")
        lines.append(
            f"| {name} | {r['completed']} | {_fmt(r['output_throughput'])} | "
            f"{_fmt(r['total_throughput'])} | {_fmt(r['median_ttft_ms'])} | "
            f"{_fmt(r['median_tpot_ms'])} | {_fmt(r['median_e2e_latency_ms'])} | "
            f"{_fmt(hit_rate and 100 * hit_rate)} | "
            f"{', '.join(_fmt(x) for x in r.get('output_throughput_runs', []))} |"
        )
    lines += [
        "",
        "| peer | batch | in | out | prefill s | output tok/s | decode tok/s | all runs, out tok/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in peers.items():
        for r in rows.values():
            lines.append(
                f"| {name} | {r['batch_size']} | {r['input_len']} | {r['output_len']} | "
                f"{_fmt(r['prefill_s'], '.2f')} | {_fmt(r['output_tok_s'])} | "
                f"{_fmt(r['decode_tok_s'])} | "
                f"{', '.join(_fmt(x) for x in r.get('output_tok_s_runs', []))} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description="radixlm CPU benchmark suite (issue 2)")
    p.add_argument("--port", type=int, default=31000, help="ours; the second server gets +1")
    p.add_argument("--out-dir", type=Path, default=BENCH / "results")
    p.add_argument("--concurrencies", type=int, nargs="*", default=list(CONCURRENCIES))
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for the server (the first start converts the GGUF)",
    )
    p.add_argument("--skip-server", action="store_true", help="peers only")
    p.add_argument("--skip-peers", action="store_true", help="our server only")
    p.add_argument(
        "--server-args",
        type=shlex.split,
        default=["--quantization", "auto"],
        help="flags for every radixlm server, one string (--server-args='--quantization none'); "
        "default: the fast CPU mode, the GGUF's own 4-bit weights",
    )
    p.add_argument(
        "--repeats",
        "--peer-repeats",  # its name when only the peers repeated
        dest="repeats",
        type=int,
        default=3,
        help="timed runs of every configuration, ours and the peers' alike (each reports its "
        "run with the median output tok/s): the VM's speed drifts between runs",
    )
    p.add_argument(
        "--hf-dtypes",
        nargs="*",
        default=["bf16", "fp32"],
        choices=["bf16", "fp32"],
        help="HF generate runs (the targets use bf16; fp32 is for reference)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny shapes and short peer runs: checks the machinery, measures nothing",
    )
    args = p.parse_args()  # fmt: skip

    args.out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    # llama-cpp-python once more before our server, so the VM's drift over the run shows.
    before = None if args.skip_server or args.skip_peers else measure_llama_cpp(args)
    # HF bf16's batch-32 runs go between our concurrency-32 runs when both sides run.
    alternate = not (args.skip_server or args.skip_peers) and "bf16" in args.hf_dtypes
    hf_batch_runs: list[dict[str, Any]] | None = [] if alternate else None
    server = (
        {}
        if args.skip_server
        else measure_server(args, bench_serving.get_tokenizer(None), hf_batch_runs)
    )
    peers = {} if args.skip_peers else measure_peers(args, hf_batch_runs)
    if before is not None:
        peers["llama_cpp_before"] = before
    env["loadavg_1m_at_end"] = os.getloadavg()[0]
    env["quick"] = args.quick
    env["server_args"] = " ".join(args.server_args)
    table = report(env, server, peers)
    print(table)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    (args.out_dir / f"cpu_suite_{stamp}.md").write_text(table + "\n")
    with open(args.out_dir / "cpu_suite.jsonl", "a") as f:
        f.write(json.dumps({"env": env, "server": server, "peers": peers}) + "\n")


if __name__ == "__main__":
    main()
