"""(f) ``vllm serve`` on the emulated NPU, driven by the OpenAI client over loopback.

The server is vLLM's own CLI, unmodified, started in its own process group with the plugin
picked up through its entry points (``NPU_PLATFORM_EMULATE=1``) and vLLM's usual process
layout (API server, engine core with the worker). Checked: the model list, a greedy
completion, a streamed completion that agrees with it, and the sleep / wake-up endpoints
of ``VLLM_SERVER_DEV_MODE`` with sleep mode on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import tiny_models, vllm_scenarios


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=60) as r:
        return r.status


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = tiny_models.build_model("llama", tmp_path_factory.mktemp("serve") / "llama")
    port = _free_port()
    log = Path(model_dir).parent / "server.log"
    env = vllm_scenarios.scenario_env(VLLM_SERVER_DEV_MODE="1")
    cmd = [
        str(Path(sys.executable).with_name("vllm")),
        "serve",
        str(model_dir),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", "256",
        "--kv-cache-memory-bytes", str(16 << 20),
        "--enable-sleep-mode",
        "--served-model-name", "tiny-llama",
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"vllm serve exited early:\n{log.read_text()[-6000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"vllm serve did not come up:\n{log.read_text()[-6000:]}")
            time.sleep(1)
        yield base, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.mark.slow
def test_openai_client_completions_and_sleep_endpoints(server):
    from openai import OpenAI

    base, log = server
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]

    prompt = "w1 w2 w3 w4 w5"
    first = client.completions.create(
        model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0
    )
    text = first.choices[0].text
    assert first.usage.completion_tokens == 12 and first.usage.prompt_tokens == 5
    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0, stream=True
        )
    )
    assert streamed == text

    assert _post(f"{base}/sleep?level=1") == 200
    assert _get_json(f"{base}/is_sleeping") == {"is_sleeping": True}
    assert _post(f"{base}/wake_up") == 200
    assert _get_json(f"{base}/is_sleeping") == {"is_sleeping": False}
    again = client.completions.create(
        model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0
    )
    assert again.choices[0].text == text

    text_log = log.read_text()
    assert "Using the NPU_ATTN attention backend" in text_log
