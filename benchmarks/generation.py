"""Generation throughput, side by side in one run.

1. Our HF backend (``HFModel.generate``: chat templating, left padding, decoding included) vs a raw
   ``model.generate`` call on the same model, the same pre-tokenised batch and the same settings.
   Target: ours / raw >= 0.95 in tokens per second.
2. Our OpenAI-compatible backend with bounded concurrency vs the same client sending the requests one
   at a time, against a real llama.cpp server on 127.0.0.1 (requests per second; no target: llama.cpp's
   Python server decodes one request at a time, so concurrency can only hide HTTP latency).

Runs are interleaved (ours, peer, ours, peer, ...) and the median is reported, so background load hits
both sides alike. Writes ``results/benchmarks/generation.json``.

Usage: ``python benchmarks/generation.py [--batch 8] [--new-tokens 64] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers

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


def bench_openai(n_requests: int, new_tokens: int, repeats: int, concurrency: int) -> tuple[dict, dict]:
    from tests.servers import LlamaServer
    from trustlab.models import load_model

    with tempfile.TemporaryDirectory() as logs:
        server = LlamaServer(Path(logs))
        server.start()
        try:
            kw = dict(model_name=server.model_alias, extra_body={"repeat_penalty": 1.0})
            conc = load_model(f"openai:{server.base_url}", max_concurrency=concurrency, **kw)
            seq = load_model(f"openai:{server.base_url}", max_concurrency=1, **kw)
            prompts = (PROMPTS * 4)[:n_requests]
            conc.generate(prompts[:2], max_new_tokens=4)  # warm-up
            t_conc, t_seq = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a = conc.generate(prompts, max_new_tokens=new_tokens)
                t_conc.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b = [seq.generate([p], max_new_tokens=new_tokens)[0] for p in prompts]
                t_seq.append(time.perf_counter() - t0)
            same = sum(x[0].text == y[0].text for x, y in zip(a, b))
        finally:
            server.stop()
    details = {"requests": n_requests, "max_new_tokens": new_tokens, "concurrency": concurrency,
               "repeats": repeats, "seconds_concurrent": t_conc, "seconds_sequential": t_seq,
               "identical_answers": f"{same}/{n_requests}", "server": "llama-cpp-python 0.3.16, n_threads=2"}
    return {"ours": n_requests / statistics.median(t_conc), "peer": n_requests / statistics.median(t_seq)}, details


def main() -> None:
    from trustlab.report import BenchmarkRecord, write_benchmark

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=4)
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
    oa, oa_details = bench_openai(args.requests, args.new_tokens // 2, max(2, args.repeats // 2), args.concurrency)
    rec_oa = BenchmarkRecord(measure="requests/s against a llama.cpp server, SmolLM2 GGUF",
                             ours=oa["ours"], peer=oa["peer"],
                             peer_name="same client, sequential requests (concurrency 1)",
                             lower_is_better=False, target=None, details=oa_details)
    print(f"OpenAI backend: concurrency {args.concurrency} {oa['ours']:.2f} req/s vs sequential "
          f"{oa['peer']:.2f} req/s -> ratio {rec_oa.ratio:.3f}")
    write_benchmark(args.out, [rec_hf, rec_oa])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
