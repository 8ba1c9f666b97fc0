"""Generation throughput, side by side in one run.

1. Our HF backend (``HFModel.generate``: chat templating, left padding, decoding included) vs a raw
   ``model.generate`` call on the same model, the same pre-tokenised batch and the same settings.
   Target: ours / raw >= 0.95 in tokens per second.
2. Our OpenAI-compatible backend at ``max_concurrency=8`` vs the same client at ``max_concurrency=1`` on the
   same greedy requests (requests per second), against two real servers on 127.0.0.1, one record each:
   llama.cpp (llama-cpp-python's server decodes one request at a time, so concurrency can only hide HTTP
   latency: no target) and ``transformers serve --continuous-batching``, which decodes the requests in
   flight together (target: >= 1.5x). Each record names its server and the peak number of requests our
   client had in flight, so a low ratio can be told apart: the server's limit or ours.

Runs are interleaved (ours, peer, ours, peer, ...) and the median is reported, so background load hits
both sides alike. Writes ``results/benchmarks/generation.json``.

Usage: ``python benchmarks/generation.py [--batch 8] [--new-tokens 64] [--repeats 5] [--requests 16]
[--concurrency 8] [--server-new-tokens 32] [--server-repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers

if TYPE_CHECKING:
    from trustlab.report import BenchmarkRecord

PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about autumn leaves.",
    "List three uses of a paperclip.",
    "What is the difference between weather and climate?",
    "Give a short tip for learning a new language.",
    "Describe a cat to someone who has never seen one.",
    "Why do we have seasons on Earth?",
    "Suggest a name for a small coffee shop.",
    "What does a compiler do?",
    "Write one sentence about the ocean.",
    "How do plants make food?",
    "Name two famous painters and one painting each.",
]


def bench_hf(batch: int, new_tokens: int, repeats: int) -> tuple[dict, dict]:
    import torch

    from trustlab.models import load_model

    handle = load_model("embedded", attn_implementation="sdpa", batch_size=batch)
    model, tok = handle.model, handle.tokenizer
    prompts = PROMPTS[:batch]
    enc = handle.encode(prompts)  # the raw side gets the batch pre-tokenised: it pays nothing for that

    def ours() -> int:
        out = handle.generate(prompts, max_new_tokens=new_tokens)
        return sum(len(tok(g[0].text, add_special_tokens=False)["input_ids"]) for g in out)

    def raw() -> int:
        with torch.inference_mode():
            seq = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = seq[:, enc["input_ids"].shape[1]:]
        return int((new != tok.pad_token_id).sum())

    ours(), raw()  # warm-up
    t_ours, t_raw, n_ours, n_raw = [], [], 0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n_ours = ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_raw = raw()
        t_raw.append(time.perf_counter() - t0)
    # Same greedy outputs on both sides, so the same number of generated tokens; count the raw side's
    # tokens (exact) for both rates.
    ours_rate = n_raw / statistics.median(t_ours)
    raw_rate = n_raw / statistics.median(t_raw)
    details = {"batch": batch, "max_new_tokens": new_tokens, "repeats": repeats, "attn": "sdpa",
               "torch_threads": torch.get_num_threads(),
               "generated_tokens": n_raw, "retokenised_tokens_ours": n_ours,
               "seconds_ours": t_ours, "seconds_raw": t_raw}
    return {"ours": ours_rate, "peer": raw_rate}, details


class InFlight:
    """Counts a handle's HTTP requests in flight through httpx event hooks on its client (a request is in
    flight from sending until its response headers arrive, i.e. until the server has answered). The peak
    says whether the client really had ``max_concurrency`` requests open at once.

    Example:
        >>> counter = InFlight(load_model("openai:http://127.0.0.1:8080/v1", max_concurrency=8))
        >>> counter.peak  # after a generate call with 8 prompts
        8
    """

    def __init__(self, handle) -> None:
        self.now = self.peak = 0
        self._lock = threading.Lock()
        hooks = handle._client.event_hooks
        hooks["request"].append(self._sent)
        hooks["response"].append(self._answered)

    def _sent(self, _request) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def _answered(self, _response) -> None:
        with self._lock:
            self.now -= 1


def bench_server(server, n_requests: int, new_tokens: int, repeats: int, concurrency: int,
                 extra_body: dict) -> tuple[dict, dict]:
    """Requests/s of one handle at ``max_concurrency=concurrency`` vs one at 1 (the same client, the same
    prompts, greedy), alternating, against a started ``server`` from :mod:`tests.servers`."""
    from trustlab.models import load_model

    # probe=False: the probe's requests (about six per handle) are set-up, not the throughput measured here
    kw = dict(model_name=server.model_alias, extra_body=extra_body, probe=False, timeout=600)
    conc = load_model(f"openai:{server.base_url}", max_concurrency=concurrency, **kw)
    seq = load_model(f"openai:{server.base_url}", max_concurrency=1, **kw)
    prompts = (PROMPTS * (n_requests // len(PROMPTS) + 1))[:n_requests]
    conc.generate(prompts[:concurrency], max_new_tokens=4)  # warm-up (both handles, the server's first batch)
    seq.generate(prompts[:1], max_new_tokens=4)
    in_conc, in_seq = InFlight(conc), InFlight(seq)
    t_conc, t_seq = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = conc.generate(prompts, max_new_tokens=new_tokens)
        t_conc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = seq.generate(prompts, max_new_tokens=new_tokens)
        t_seq.append(time.perf_counter() - t0)
    same = sum(x[0].text == y[0].text for x, y in zip(a, b))
    details = {"requests": n_requests, "max_new_tokens": new_tokens, "concurrency": concurrency,
               "repeats": repeats, "seconds_concurrent": t_conc, "seconds_sequential": t_seq,
               "peak_in_flight_concurrent": in_conc.peak, "peak_in_flight_sequential": in_seq.peak,
               "identical_answers": f"{same}/{n_requests}", "server_args": server.command()[3:]}
    return {"ours": n_requests / statistics.median(t_conc), "peer": n_requests / statistics.median(t_seq)}, details


def bench_openai(n_requests: int, new_tokens: int, repeats: int, concurrency: int) -> list[BenchmarkRecord]:
    """One record per server: llama.cpp (no target) and ``transformers serve --continuous-batching``."""
    import llama_cpp
    import transformers

    from tests.servers import LlamaServer, TransformersServer
    from trustlab.report import BenchmarkRecord

    servers = [
        (LlamaServer, f"llama.cpp server (llama-cpp-python {llama_cpp.__version__}), SmolLM2 Q4_1 GGUF",
         {"repeat_penalty": 1.0}, None,
         "llama-cpp-python's server holds a lock around its one model, so it decodes one request at a time: "
         "concurrency can only overlap HTTP and templating with decoding, hence no target"),
        (TransformersServer, f"transformers serve --continuous-batching (transformers {transformers.__version__}), "
                             "SmolLM2 dequantised", {}, 1.5,
         "continuous batching decodes the requests in flight together; target from issue 16"),
    ]
    records = []
    with tempfile.TemporaryDirectory() as logs:
        for cls, name, extra_body, target, note in servers:
            server = cls(Path(logs))
            server.start(timeout=300)
            try:
                rates, details = bench_server(server, n_requests, new_tokens, repeats, concurrency, extra_body)
            finally:
                server.stop()
            records.append(BenchmarkRecord(
                measure=f"requests/s, concurrency {concurrency} vs 1, {name}", ours=rates["ours"], peer=rates["peer"],
                peer_name="same client, sequential requests (max_concurrency=1)", lower_is_better=False,
                target=target, details={**details, "server": name, "note": note,
                                        "server_env_omp_num_threads": server.env().get("OMP_NUM_THREADS")}))
            print(f"{name}: concurrency {concurrency} {rates['ours']:.2f} req/s vs sequential {rates['peer']:.2f} "
                  f"req/s -> ratio {records[-1].ratio:.3f} (peak in flight {details['peak_in_flight_concurrent']})")
    return records


def main() -> None:
    from trustlab.report import BenchmarkRecord, write_benchmark

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--requests", type=int, default=16, help="requests per timed run, against each server")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--server-new-tokens", type=int, default=32)
    ap.add_argument("--server-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 gives steadier numbers on a machine shared with other jobs)")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/generation.json"))
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    hf, hf_details = bench_hf(args.batch, args.new_tokens, args.repeats)
    rec_hf = BenchmarkRecord(measure="batched generation throughput (tokens/s), HF backend, SmolLM2-135M",
                             ours=hf["ours"], peer=hf["peer"], peer_name="raw transformers model.generate",
                             lower_is_better=False, target=0.95, details=hf_details)
    print(f"HF backend: ours {hf['ours']:.1f} tok/s vs raw generate {hf['peer']:.1f} tok/s -> ratio {rec_hf.ratio:.3f}")
    rec_servers = bench_openai(args.requests, args.server_new_tokens, args.server_repeats, args.concurrency)
    write_benchmark(args.out, [rec_hf, *rec_servers])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
