"""sglang 0.5.23 end to end on the emulated NPU: real sglang processes, no mocks.

One module fixture starts three runs at once (their start-ups, mostly sglang's imports in
every process, overlap on the two cores) and every test reads one of them:

* an ``Engine`` run in a child interpreter (:data:`ENGINE_CHILD`): ``sglang.Engine(device=
  "npu")`` on a tiny Llama and a tiny GQA Qwen2 in bfloat16 with page size 128, greedy tokens
  compared with Hugging Face ``generate``; and ``--dtype float32``, which the ascend
  backend's kernels do not take, refused before anything starts;
* server A, started with the README's command (:data:`README_SGLANG`, shared with the
  README text): ``launch_server --device npu --enable-memory-saver
  --enable-weights-cpu-backup`` on a tiny Llama with 128 MiB of KV cache and 50 MiB of
  weights. The README's ``curl`` lines run verbatim (port and model path substituted) and the
  scheduler process's resident memory is measured after each;
* server B: ``--tp 2`` (hccl, two emulated devices) on a tiny GQA Qwen2 with the memory
  saver and no weights backup: its tokens against Hugging Face, and weights released and
  restored through sglang's own ``/update_weights_from_disk``.

Each server runs on a free port, in its own session, and is stopped with SIGTERM (then
SIGKILL) at the end; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.tiny_models import (
    build_model,
    greedy_agreement,
    hf_greedy,
    load_tokenizer,
    prompts,
    weight_bytes,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 900  # seconds for a server or the Engine run (2 busy cores)
REQUEST_TIMEOUT = 180
NEW_TOKENS = 8
MiB = 1 << 20

#: The README's sglang commands, exactly as this test runs them (the README section is
#: written from this text). ``python`` is this interpreter, ``<model>`` the tiny model,
#: port 30000 a free port.
README_SGLANG = """\
NPU_PLATFORM_EMULATE=1 python -m sglang.launch_server --model-path <model> --device npu \\
    --dtype bfloat16 --mem-fraction-static 0.5 --max-total-tokens 65536 \\
    --enable-memory-saver --enable-weights-cpu-backup --port 30000
curl -s localhost:30000/generate -H 'Content-Type: application/json' \\
    -d '{"input_ids": [5, 6, 7, 8], "sampling_params": {"max_new_tokens": 8, "temperature": 0}}'
curl -s localhost:30000/release_memory_occupation -H 'Content-Type: application/json' \\
    -d '{"tags": ["kv_cache"]}'
curl -s localhost:30000/release_memory_occupation -H 'Content-Type: application/json' \\
    -d '{"tags": ["weights"]}'
curl -s localhost:30000/resume_memory_occupation -H 'Content-Type: application/json' \\
    -d '{"tags": ["kv_cache"]}'
curl -s localhost:30000/resume_memory_occupation -H 'Content-Type: application/json' \\
    -d '{"tags": ["weights"]}'
curl -s localhost:30000/generate -H 'Content-Type: application/json' \\
    -d '{"input_ids": [5, 6, 7, 8], "sampling_params": {"max_new_tokens": 8, "temperature": 0}}'
curl -s localhost:30000/release_memory_occupation -H 'Content-Type: application/json' \\
    -d '{}'
curl -s localhost:30000/resume_memory_occupation -H 'Content-Type: application/json' \\
    -d '{}'
curl -s localhost:30000/generate -H 'Content-Type: application/json' \\
    -d '{"input_ids": [5, 6, 7, 8], "sampling_params": {"max_new_tokens": 8, "temperature": 0}}'
"""
README_PORT = "30000"
#: Server A's model: 4 layers, 4 KV heads of 32 -> 65536 tokens of bf16 KV are 128 MiB.
LLAMA_BIG = {"hidden_size": 128, "intermediate_size": 16384, "num_hidden_layers": 4}
KV_BYTES = 65536 * 4 * 2 * 4 * 32 * 2
#: head_dim 32: npu_mrope takes a rotary dim that is a multiple of 32 in bf16.
TINY = {"hidden_size": 128}

ENGINE_CHILD = r"""
import json, sys
import sglang
from sglang.srt import platforms
from sglang.srt.arg_groups.overrides import resolving_view
from sglang.srt.server_args import ServerArgs

llama, qwen2, prompts_json, new_tokens = sys.argv[1:5]
prompts = json.loads(prompts_json)
report = {}
cp = platforms.current_platform
report["platform"] = type(cp).__module__ + "." + type(cp).__qualname__
report["supports_triton"] = cp.capabilities.supports_triton
report["graph_capture"] = cp.capabilities.graph_capture
# Auto-detection: no --device gives npu.
auto = ServerArgs(model_path=llama)
auto.resolve_once()
report["auto_device"] = resolving_view(auto).device
for name, path in (("llama", llama), ("qwen2", qwen2)):
    engine = sglang.Engine(
        model_path=path, device="npu", dtype="bfloat16", page_size=128,
        mem_fraction_static=0.5, max_total_tokens=4096, skip_tokenizer_init=True,
        log_level="warning",
    )
    try:
        args = resolving_view(engine.server_args)
        report[name + "_args"] = [args.device, args.attention_backend, args.page_size]
        out = engine.generate(
            input_ids=prompts[name],
            sampling_params={"max_new_tokens": int(new_tokens), "temperature": 0,
                             "ignore_eos": True},
        )
        report[name] = [o["output_ids"] for o in out]
    finally:
        engine.shutdown()
try:
    sglang.Engine(model_path=llama, device="npu", dtype="float32", log_level="warning")
    report["fp32"] = "started"
except Exception as exc:
    report["fp32"] = type(exc).__name__ + ": " + str(exc)
print("REPORT " + json.dumps(report), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_commands() -> list[str]:
    """The README block's commands, continuation lines joined."""
    return [c.strip() for c in README_SGLANG.replace("\\\n", " ").splitlines() if c.strip()]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NPU_PLATFORM_EMULATE", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@dataclass
class Run:
    """A child process in its own session, its log file and its deadline."""

    name: str
    proc: subprocess.Popen
    log: Path
    port: int | None = None
    info: dict = field(default_factory=dict)

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = [ln for ln in text.splitlines() if "ResourceWarning" not in ln]
        return "\n".join(lines)[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)


def start(name: str, argv: list[str], env: dict[str, str], logdir: Path, **kw) -> Run:
    log = logdir / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=logdir,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Run(name, proc, log, **kw)


def http(port: int, path: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def wait_ready(run: Run, deadline: float) -> None:
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            pytest.fail(f"{run.name} exited with {run.proc.returncode}:\n{run.log_tail()}")
        try:
            if http(run.port, "/health")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(2)
    pytest.fail(f"{run.name} not ready after {START_TIMEOUT} s:\n{run.log_tail()}")


def scheduler_rss(run: Run) -> list[int]:
    """Resident bytes of each of the server's scheduler processes."""
    procs = psutil.Process(run.proc.pid).children(recursive=True)
    found = [p for p in procs if p.name().startswith("sglang::scheduler")]
    assert found, f"no scheduler process under {run.name}"
    return [p.memory_info().rss for p in found]


def generate(port: int, input_ids: list) -> list:
    status, body = http(
        port,
        "/generate",
        {
            "input_ids": input_ids,
            "sampling_params": {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True},
        },
    )
    assert status == 200, body
    return [o["output_ids"] for o in body] if isinstance(body, list) else body["output_ids"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    root = tmp_path_factory.mktemp("sglang_e2e")
    models = {
        "llama": build_model("llama", root / "llama", **TINY),
        "qwen2": build_model("qwen2", root / "qwen2", **TINY),
        "big": build_model("llama", root / "llama_big", **LLAMA_BIG),
    }
    tok = load_tokenizer(models["llama"])
    ids = [tok(p)["input_ids"] for p in prompts(4)]
    started: dict[str, Run] = {}
    try:
        started["engine"] = start(
            "engine",
            [
                sys.executable,
                "-c",
                ENGINE_CHILD,
                str(models["llama"]),
                str(models["qwen2"]),
                json.dumps({"llama": ids, "qwen2": ids}),
                str(NEW_TOKENS),
            ],
            child_env(NPU_PLATFORM_EMULATE="1"),
            root,
            info={"prompts": ids, "models": models},
        )
        port_a = free_port()
        launch = readme_commands()[0]
        launch = launch.replace(" python ", f" {shlex.quote(sys.executable)} ", 1)
        launch = launch.replace("<model>", shlex.quote(str(models["big"])))
        launch = launch.replace(README_PORT, str(port_a))
        started["readme"] = start(
            "readme",
            ["bash", "-c", launch],
            child_env(),
            root,
            port=port_a,
            info={"model": models["big"]},
        )
        port_b = free_port()
        started["tp2"] = start(
            "tp2",
            [
                sys.executable,
                "-m",
                "sglang.launch_server",
                "--model-path",
                str(models["qwen2"]),
                "--device",
                "npu",
                "--tp",
                "2",
                "--dtype",
                "bfloat16",
                "--page-size",
                "128",
                "--mem-fraction-static",
                "0.5",
                "--max-total-tokens",
                "8192",
                "--enable-memory-saver",
                "--skip-server-warmup",
                "--port",
                str(port_b),
                "--host",
                "127.0.0.1",
            ],
            child_env(NPU_PLATFORM_EMULATE="1", NPU_PLATFORM_EMULATE_DEVICES="2"),
            root,
            port=port_b,
            info={"prompts": ids, "model": models["qwen2"]},
        )
        yield started
    finally:
        for run in started.values():
            run.stop()


def _engine_report(run: Run) -> dict:
    try:
        run.proc.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.stop()
        pytest.fail(f"Engine run still going after {START_TIMEOUT} s:\n{run.log_tail()}")
    lines = [ln for ln in run.log.read_text().splitlines() if ln.startswith("REPORT ")]
    assert run.proc.returncode == 0 and lines, f"Engine run failed:\n{run.log_tail()}"
    return json.loads(lines[-1][len("REPORT ") :])


def test_engine_matches_hugging_face_and_refuses_fp32(runs: dict[str, Run]) -> None:
    run = runs["engine"]
    report = _engine_report(run)
    assert report["platform"] == "npu_platform.sglang.platform.NPUPlatform"
    assert report["auto_device"] == "npu"
    # No Triton backend for Ascend here: off (the reason is logged; see the server test).
    assert report["supports_triton"] is False
    assert report["graph_capture"] is True  # the emulated torch_npu has NPU graphs
    for kind in ("llama", "qwen2"):
        assert report[kind + "_args"] == ["npu", "ascend", 128]
        model = run.info["models"][kind]
        ref = hf_greedy(model, run.info["prompts"], NEW_TOKENS, dtype="bfloat16")
        verdict = greedy_agreement(model, run.info["prompts"], report[kind], ref, "bfloat16")
        assert verdict["ok"], (kind, verdict, report[kind], ref)
        assert verdict["compared"] >= verdict["total"] // 2, (kind, verdict)
    assert report["fp32"].startswith("UnsupportedSetting: --dtype float32 cannot run"), report


def test_readme_commands_release_resume_and_measure(runs: dict[str, Run]) -> None:
    run = runs["readme"]
    wait_ready(run, time.monotonic() + START_TIMEOUT)
    results = []
    for command in readme_commands()[1:]:
        line = command.replace(README_PORT, str(run.port))
        before = sum(scheduler_rss(run))
        out = subprocess.run(
            ["bash", "-c", line],
            capture_output=True,
            text=True,
            timeout=REQUEST_TIMEOUT,
            check=True,
        )
        after = sum(scheduler_rss(run))
        body = json.loads(out.stdout or "null")
        assert not (isinstance(body, dict) and "error" in body), (command, body)
        results.append((command, body, before, after))
    log = run.log_tail(10**7)
    assert "npu-platform: Triton kernels off on this NPU: no Triton backend for Ascend" in log
    generations = [body["output_ids"] for c, body, *_ in results if "/generate" in c]
    assert len(generations) == 3 and generations[0]
    assert generations[0] == generations[1] == generations[2]
    deltas = [(after - before) / MiB for *_, before, after in results]
    kv = KV_BYTES / MiB
    weights = weight_bytes(run.info["model"]) / 2 / MiB  # bf16 on the device
    # Steps: generate, -kv, -weights, +kv, +weights, generate, -all, +all, generate.
    _gen0, rel_kv, rel_w, res_kv, res_w, _gen1, rel_all, res_all, _gen2 = deltas
    assert rel_kv < -0.9 * kv, deltas
    assert res_kv > 0.9 * kv, deltas
    assert rel_w < 0 and res_w > 0, deltas  # the host backup stays resident
    assert rel_all < -0.9 * kv, deltas
    assert res_all > 0.9 * kv, deltas
    report = {
        "kv_cache_mib": round(kv),
        "weights_mib": round(weights),
        "steps": [
            {
                "command": c,
                "scheduler_rss_mib_before": round(b / MiB),
                "scheduler_rss_mib_after": round(a / MiB),
            }
            for c, _body, b, a in results
        ],
    }
    print("MEMORY " + json.dumps(report))


def test_bad_memory_requests_get_sglangs_error_and_server_keeps_serving(
    runs: dict[str, Run],
) -> None:
    run = runs["readme"]
    wait_ready(run, time.monotonic() + START_TIMEOUT)
    prompt = [5, 6, 7, 8]
    before = generate(run.port, prompt)
    cases = [
        ("/release_memory_occupation", {"tags": ["kv_cahce"]}, "unknown tag(s) 'kv_cahce'"),
        ("/resume_memory_occupation", {"tags": ["weights"]}, "'weights' not released"),
        ("/resume_memory_occupation", {}, "nothing to resume"),
    ]
    for path, body, message in cases:
        status, answer = http(run.port, path, body)
        assert status == 400 and message in answer["error"]["message"], (path, body, answer)
    status, answer = http(run.port, "/release_memory_occupation", {"tags": ["kv_cache"]})
    assert status == 200, answer
    status, answer = http(run.port, "/release_memory_occupation", {"tags": ["kv_cache"]})
    assert status == 400 and "'kv_cache' already released" in answer["error"]["message"]
    status, answer = http(run.port, "/resume_memory_occupation", {"tags": ["kv_cache"]})
    assert status == 200, answer
    assert generate(run.port, prompt) == before
    assert run.proc.poll() is None


def test_tp2_hccl_matches_hf_and_reloads_weights_through_sglang(runs: dict[str, Run]) -> None:
    run = runs["tp2"]
    wait_ready(run, time.monotonic() + START_TIMEOUT)
    ids = run.info["prompts"]
    got = generate(run.port, ids)
    ref = hf_greedy(run.info["model"], ids, NEW_TOKENS, dtype="bfloat16")
    verdict = greedy_agreement(run.info["model"], ids, got, ref, "bfloat16")
    assert verdict["ok"], (verdict, got, ref)
    log = run.log_tail(10**7)
    assert "TP1" in log and "hccl" in log
    assert len(scheduler_rss(run)) == 2

    # Without --enable-weights-cpu-backup the released weights' contents are gone...
    assert http(run.port, "/release_memory_occupation", {"tags": ["weights"]})[0] == 200
    assert http(run.port, "/resume_memory_occupation", {"tags": ["weights"]})[0] == 200
    assert generate(run.port, ids) != got
    # ... and sglang's own weight-update path restores them.
    status, answer = http(
        run.port, "/update_weights_from_disk", {"model_path": str(run.info["model"])}
    )
    assert status == 200 and answer["success"], answer
    assert generate(run.port, ids) == got


def test_readme_shows_exactly_the_commands_this_file_runs():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "```bash\n" + README_SGLANG + "```" in readme
