"""Load on the OpenAI-compatible server: `python -m sphinx_vi.bench.serve_load --out FILE.json`.

Starts `python -m sphinx_vi serve` on loopback as its own process, then, each phase bounded in time:
one client in sequence (the baseline), one streaming client (time to first token), and
`--clients` concurrent clients while one hostile client sends bad requests (malformed JSON, a
non-image data URL, a 40 MP image, a 1 MB prompt, an unknown model). Reports requests served and
lost, p50/p99 latency, requests/s and answer tokens/s against the sequential run, the hostile
requests' statuses, and the resident memory of the server and its model process across the run (flat = no
growth under load).
"""

from __future__ import annotations

import base64
import io
import json
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image

from . import command_parser, machine, write_json

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "world_shapes_1.png"
CATEGORIES = ("hình tròn", "hình vuông", "hình tam giác", "hình sao")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _request(prompt: str, url: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny-shapes", "max_tokens": max_tokens, **extra, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]}]}


def hostile_requests() -> list[tuple[str, bytes]]:
    """(name, body) of each bad request the server must answer with a 4xx."""
    big = io.BytesIO()
    Image.new("RGB", (8000, 5000), (200, 30, 30)).save(big, format="PNG")
    return [("malformed JSON", b'{"messages": [{"role": "user"'),
            ("non-image data URL", json.dumps(_request("hi", "data:text/plain;base64,aGk=", 8)).encode()),
            ("40 MP image", json.dumps(_request("hi", _data_url(big.getvalue()), 8)).encode()),
            ("1 MB prompt", json.dumps({"messages": [{"role": "user", "content": "x" * 1_000_000}]}).encode()),
            ("unknown model", json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode())]


class MemoryWatch(threading.Thread):
    """Samples the resident set (MB) of a process and its descendants (the server and its model's engine process)
    every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.proc, self.every, self._stop_event = psutil.Process(pid), every, threading.Event()
        self.samples: list[tuple[float, float]] = []

    def run(self) -> None:
        while not self._stop_event.is_set():
            tree = [self.proc, *self.proc.children(recursive=True)]
            rss = 0
            for proc in tree:
                try:
                    rss += proc.memory_info().rss
                except psutil.NoSuchProcess:  # a helper process that ended between listing and reading
                    pass
            self.samples.append((time.perf_counter(), rss / 2**20))
            time.sleep(self.every)

    def stop(self) -> list[tuple[float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _summary(latencies: list[float], tokens: int, seconds: float, sent: int, lost: int) -> dict[str, Any]:
    return {"requests_sent": sent, "requests_served": len(latencies), "requests_lost": lost, "seconds": seconds,
            "p50_s": statistics.median(latencies) if latencies else float("nan"), "p99_s": _percentile(latencies, 0.99),
            "requests_per_s": len(latencies) / seconds, "answer_tokens_per_s": tokens / seconds}


def run_clients(url: str, clients: int, seconds: float, max_tokens: int, image_url: str, max_requests: int) -> dict[str, Any]:
    """`clients` threads sending requests in a loop until `seconds` pass (or `max_requests` were sent)."""
    latencies: list[float] = []
    counts = {"sent": 0, "lost": 0, "tokens": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            i = 0
            while time.perf_counter() < deadline:
                with lock:
                    if counts["sent"] >= max_requests:
                        return
                    counts["sent"] += 1
                body = _request(f"Phát hiện tất cả {CATEGORIES[(k + i) % 4]} có trong ảnh.", image_url, max_tokens)
                t = time.perf_counter()
                try:
                    reply = http.post("/v1/chat/completions", json=body)
                    ok = reply.status_code == 200 and reply.json()["choices"][0]["grounding"] is not None
                except httpx.HTTPError:
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - t)
                        counts["tokens"] += reply.json()["usage"]["completion_tokens"]
                    else:
                        counts["lost"] += 1
                i += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return _summary(latencies, counts["tokens"], time.perf_counter() - start, counts["sent"], counts["lost"])


def first_token_seconds(url: str, image_url: str, max_tokens: int, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=300) as http:
        for i in range(n):
            t = time.perf_counter()
            body = _request(f"Phát hiện tất cả {CATEGORIES[i % 4]} có trong ảnh.", image_url, max_tokens, stream=True)
            first = None
            with http.stream("POST", "/v1/chat/completions", json=body) as reply:
                for line in reply.iter_lines():  # read to the end: the request completes before the next
                    if first is None and line.startswith("data: ") and '"content"' in line and '"content": ""' not in line:
                        first = time.perf_counter() - t
            if first is not None:
                out.append(first)
    return out


def hostile(url: str, stop: threading.Event, statuses: dict[str, list[int]]) -> None:
    with httpx.Client(base_url=url, timeout=300) as http:
        while not stop.is_set():
            for name, body in hostile_requests():
                reply = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
                statuses.setdefault(name, []).append(reply.status_code)
            stop.wait(1.0)


def bench(model: str, clients: int, seconds: float, max_tokens: int, max_requests: int) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "sphinx_vi", "serve", "--model", model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the server did not come up in 180 s")
            time.sleep(0.3)
        image_url = _data_url(EXAMPLE.read_bytes())
        run_clients(url, 1, 3.0, max_tokens, image_url, 5)  # warm-up
        watch = MemoryWatch(server.pid)
        watch.start()
        sequential = run_clients(url, 1, seconds, max_tokens, image_url, max_requests)
        ttft = first_token_seconds(url, image_url, max_tokens, 8)
        stop, statuses = threading.Event(), dict[str, list[int]]()
        bad = threading.Thread(target=hostile, args=(url, stop, statuses))
        bad.start()
        concurrent = run_clients(url, clients, seconds, max_tokens, image_url, max_requests)
        stop.set()
        bad.join()
        healthy = httpx.get(url + "/health", timeout=10).status_code == 200
        memory = watch.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
    rss = [m for _, m in memory]
    third = max(1, len(rss) // 3)
    return {
        "model": model, "clients": clients, "seconds_per_phase": seconds, "max_tokens": max_tokens,
        "engine": "transformers serve (sequential generate in its model process)",
        "sequential": sequential, "concurrent": concurrent,
        "throughput_ratio": concurrent["requests_per_s"] / sequential["requests_per_s"],
        "streaming_first_token_p50_s": statistics.median(ttft) if ttft else float("nan"),
        "hostile": {name: sorted(set(codes)) for name, codes in statuses.items()},
        "hostile_all_4xx": all(400 <= c < 500 for codes in statuses.values() for c in codes),
        "healthy_after": healthy,
        "rss_mb": {"first_third_mean": statistics.mean(rss[:third]), "last_third_mean": statistics.mean(rss[-third:]),
                   "peak": max(rss), "samples": len(rss)},
        "machine": {**machine(), "platform": platform.platform()},
    }


def format_table(r: dict[str, Any]) -> str:
    rows = [f"server load, {r['model']}, {r['clients']} concurrent clients vs 1, {r['seconds_per_phase']:.0f} s per phase, {r['engine']}",
            f"{'phase':<12}{'sent':>6}{'served':>8}{'lost':>6}{'p50 s':>8}{'p99 s':>8}{'req/s':>8}{'tok/s':>8}"]
    for name in ("sequential", "concurrent"):
        p = r[name]
        rows.append(f"{name:<12}{p['requests_sent']:>6}{p['requests_served']:>8}{p['requests_lost']:>6}{p['p50_s']:>8.3f}{p['p99_s']:>8.3f}"
                    f"{p['requests_per_s']:>8.2f}{p['answer_tokens_per_s']:>8.1f}")
    m = r["rss_mb"]
    rows += [f"throughput concurrent / sequential: {r['throughput_ratio']:.2f}x; streaming first token p50 {r['streaming_first_token_p50_s']:.3f} s",
             f"hostile requests: {r['hostile']} (all 4xx: {r['hostile_all_4xx']}); healthy after: {r['healthy_after']}",
             f"server RSS MB: first third {m['first_third_mean']:.0f}, last third {m['last_third_mean']:.0f}, peak {m['peak']:.0f}"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("python -m sphinx_vi.bench.serve_load", __doc__)
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-requests", type=int, default=5000, help="upper bound on requests per phase")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = bench(args.model, args.clients, args.seconds, args.max_tokens, args.max_requests)
    print(format_table(result))
    write_json(args.out, result)
    return 0 if result["concurrent"]["requests_lost"] == 0 and result["hostile_all_4xx"] and result["healthy_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
