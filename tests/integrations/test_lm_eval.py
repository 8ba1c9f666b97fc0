"""The lm-evaluation-harness model type ``trustlab`` and trustlab's lm-eval tasks, through lm-eval itself.

The CLI tests run the real ``lm_eval`` CLI offline in subprocesses (``python -m trustlab.integrations.lm_eval``:
lm-eval's own CLI with ``trustlab`` registered, since lm-eval 0.4.13 does not discover entry points) on a tiny
random Llama saved to disk and on the embedded SmolLM2, and compare every per-sample response with lm-eval's own
``hf`` model type on the same weights. Parity tolerance: 1e-4 absolute on each summed log-likelihood (float32,
CPU; in practice the two agree exactly), identical greedy flags, generations and metrics.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import Registry, get_model  # noqa: E402

from trustlab.errors import CapabilityError, DataFileError, TrustlabError  # noqa: E402
from trustlab.integrations.lm_eval import TARGET, TrustlabLM, register, tasks_path  # noqa: E402

ATOL = 1e-4
ROOT = Path(__file__).resolve().parents[2]
BEYONDX = ROOT / ".." / "shared" / "data" / "beyondx"
TINY_TASKS = ["trustlab_cf_qa_mc", "trustlab_verne_ppl", "trustlab_cf_qa", "trustlab_niah"]
CHAT = [{"role": "user", "content": "The capital of France is Lyon. What is the capital of France?"}]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TRUSTLAB_DTYPE": "float32", "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------- helpers
def lm_eval_cli(args: list[str], out: Path, ours: bool) -> subprocess.CompletedProcess:
    """One offline lm-eval run: our entry (registers ``trustlab``, adds the task path) or plain ``lm_eval``."""
    head = [sys.executable, "-m", "trustlab.integrations.lm_eval"] if ours else \
        [sys.executable, "-m", "lm_eval", "--include_path", str(tasks_path())]
    cmd = [*head, *args, "--device", "cpu", "--batch_size", "4", "--output_path", str(out), "--log_samples"]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)


def samples(out: Path, task: str) -> list[dict]:
    """The per-sample records of ``task`` (by doc_id) from an ``--output_path`` folder."""
    files = [p for p in out.rglob("samples_*.jsonl") if re.fullmatch(rf"samples_{task}_\d.*\.jsonl", p.name)]
    assert len(files) == 1, f"expected one samples file for {task} in {out}, got {files}"
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    return sorted(rows, key=lambda r: r["doc_id"])


def results(out: Path) -> dict:
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())["results"]


def assert_parity(ours: Path, peer: Path, tasks: list[str]) -> None:
    for task in tasks:
        a, b = samples(ours, task), samples(peer, task)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            for rx, ry in zip(x["resps"], y["resps"], strict=True):
                if isinstance(ry[0], list):  # (loglikelihood, is_greedy)
                    assert abs(float(rx[0][0]) - float(ry[0][0])) <= ATOL, (task, x["doc_id"], rx, ry)
                    assert rx[0][1] == ry[0][1]
                elif re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", str(ry[0])):  # rolling loglikelihood
                    assert abs(float(rx[0]) - float(ry[0])) <= ATOL, (task, x["doc_id"], rx, ry)
                else:  # generated text
                    assert rx == ry, (task, x["doc_id"], rx, ry)
        ra, rb = results(ours)[task], results(peer)[task]
        for key, value in rb.items():
            if isinstance(value, float) and not key.endswith("_stderr,none"):
                assert ra[key] == pytest.approx(value, rel=1e-5), (task, key)


def loglik(lm: TrustlabLM, pairs: list[tuple[str, str]]) -> list[float]:
    reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    return [lp for lp, _ in lm.loglikelihood(reqs, disable_tqdm=True)]


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    """A tiny random-weight Llama (2 layers, hidden 64, SmolLM2's tokenizer) made from a config, saved to disk."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TINY_ARGS = ["--tasks", ",".join(TINY_TASKS), "--limit", "3", "--gen_kwargs", "max_gen_toks=12",
             "--metadata", json.dumps({"niah_lengths": [100], "niah_depths": [0.5]})]
EMBEDDED_TASKS = ["trustlab_cf_qa_mc", "trustlab_cf_qa"]
EMBEDDED_ARGS = ["--tasks", ",".join(EMBEDDED_TASKS), "--limit", "4"]


@pytest.fixture(scope="module", autouse=True)
def cli(request, tmp_path_factory):
    """The CLI runs the selected CLI tests need, started at once in the background, two at a time (each is
    single-threaded), so they overlap with the in-process tests. Maps a run name to (future result, out dir)."""
    selected = {item.name for item in request.session.items}
    runs: dict[str, tuple[list[str], bool]] = {}
    if "test_cli_tiny_model_matches_hf" in selected:
        tiny = request.getfixturevalue("tiny_dir")
        runs["tiny_ours"] = (["--model", "trustlab", "--model_args", f"spec={tiny},dtype=float32", *TINY_ARGS], True)
        runs["tiny_hf"] = (["--model", "hf", "--model_args", f"pretrained={tiny},dtype=float32", *TINY_ARGS], False)
    if "test_cli_embedded_model_matches_hf" in selected:
        smollm = request.getfixturevalue("smollm_dir")
        runs["embedded_ours"] = (["--model", "trustlab", "--model_args", "spec=embedded,dtype=float32",
                                  *EMBEDDED_ARGS], True)
        runs["embedded_hf"] = (["--model", "hf", "--model_args", f"pretrained={smollm},dtype=float32",
                                *EMBEDDED_ARGS], False)
    if "test_cli_loglikelihood_on_a_server_without_prompt_logprobs_fails_clearly" in selected:
        runs["openai"] = (["--model", "trustlab", "--model_args",
                           "spec=openai:http://127.0.0.1:9/v1,model_name=m,probe=False",
                           "--tasks", "trustlab_cf_qa_mc", "--limit", "2"], True)
    root = tmp_path_factory.mktemp("lm-eval-runs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: (pool.submit(lm_eval_cli, args, root / name, ours), root / name)
               for name, (args, ours) in runs.items()}


def finished(cli, *names: str) -> list[Path]:
    """Wait for CLI runs, check they succeeded, return their output folders."""
    outs = []
    for name in names:
        future, out = cli[name]
        proc = future.result()
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        outs.append(out)
    return outs


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from trustlab.models import load_model

    return load_model(str(tiny_dir), dtype="float32", attn_implementation="sdpa")


# ------------------------------------------------------------------------------------------- registration
def test_entry_point_value_resolves_to_the_model_class():
    """What the ``lm_eval.models`` entry point registers (a lazy placeholder) resolves to an LM subclass."""
    registry = Registry("model", base_cls=LM)
    registry.register("trustlab", target=EntryPoint(name="trustlab", value=TARGET, group="lm_eval.models"))
    assert registry.get("trustlab") is TrustlabLM
    register()  # idempotent, and the global registry resolves the name too
    register()
    assert get_model("trustlab") is TrustlabLM


def test_tasks_ship_as_an_include_path():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(tasks_path()))
    names = set(manager.all_tasks)
    assert {"trustlab_niah", "trustlab_cf_qa", "trustlab_cf_qa_mc", "trustlab_verne_ppl", "trustlab_beyondx_3",
            "trustlab_beyondx_4", "trustlab_beyondx_5", "trustlab_beyondx"} <= names


@pytest.mark.skipif(not any(ep.name == "trustlab" for ep in entry_points(group="lm_eval.models")),
                    reason="needs trustlab installed with its lm_eval.models entry point")
def test_plain_lm_eval_finds_trustlab(tmp_path):
    """``lm_eval --model trustlab`` with no trustlab code on the command line (lm-eval releases that discover
    entry points; 0.4.13 does not, hence the skip there)."""
    import lm_eval.api.registry as reg

    if not hasattr(reg, "import_plugins"):
        pytest.skip(f"lm-eval {reg.__name__} does not discover entry-point plugins")
    proc = lm_eval_cli(["--model", "trustlab", "--model_args", "spec=embedded", "--tasks", "trustlab_cf_qa_mc",
                        "--limit", "2"], tmp_path, ours=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------- tasks
def test_task_data_is_generated_offline():
    from trustlab.integrations.lm_eval_tasks.utils import cf_choices, cf_dataset, niah_dataset, niah_results

    docs = niah_dataset(niah_lengths=[120], niah_depths=[0.5])["test"]
    assert len(docs) == 3 and all(d["needle"] in d["context"] for d in docs)
    assert niah_results(docs[0], [docs[0]["needle"]])["recall"] == 1.0
    assert niah_results(docs[0], ["I do not know."])["recall"] == 0.0
    cf = cf_dataset()["test"]
    assert cf_choices(cf[0]) == ["Lyon", "Paris"] and "Lyon" in cf[0]["context"]


@pytest.mark.skipif(not BEYONDX.is_dir(), reason="the BeyondX files are not in ../shared/data/beyondx")
def test_beyondx_by_unknowns_from_a_local_path():
    from trustlab.integrations.lm_eval_tasks.utils import beyondx_dataset, beyondx_results

    docs = beyondx_dataset(4, beyondx_path=str(BEYONDX))["test"]
    assert len(docs) == 158 and {d["unknowns"] for d in docs} == {4}
    gold = ", ".join(f"{a:g}" for a in docs[0]["answers"])
    assert beyondx_results(docs[0], [f"\\boxed{{{gold}}}"]) == {"acc": 1.0, "acc_rel": 1.0, "valid": 1.0}
    assert beyondx_results(docs[0], ["no idea"])["valid"] == 0.0


def test_beyondx_without_local_data_says_where_to_put_it(tmp_path, monkeypatch):
    from trustlab.integrations.lm_eval_tasks.utils import beyondx_dataset

    monkeypatch.delenv("TRUSTLAB_BEYONDX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data/beyondx from here
    with pytest.raises(DataFileError, match="beyondx_path"):
        beyondx_dataset(3)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_fail_clearly():
    with pytest.raises(TrustlabError, match="batch_size=auto"):
        TrustlabLM("embedded", batch_size="auto")
    with pytest.raises(TrustlabError, match="unknown defense"):
        TrustlabLM("embedded", defense="smoothllm")
    with pytest.raises(CapabilityError, match="attention steering"):
        TrustlabLM("openai:http://127.0.0.1:9/v1", model_name="m", probe=False, steering_alpha=0.9)


# ------------------------------------------------------------------------------------------- steering, defense
def test_steering_changes_chat_scores_and_is_removed_after(tiny):
    plain = TrustlabLM(tiny)
    ctx = plain.apply_chat_template(CHAT)
    pairs = [(ctx, "Lyon"), (ctx, "Paris"), ("The capital of France is Lyon. Answer:", " Lyon")]
    before = loglik(plain, pairs)
    steered = TrustlabLM(tiny, steering_alpha=0.5)
    steered.apply_chat_template(CHAT)
    after = loglik(steered, pairs)
    assert abs(after[0] - before[0]) > 1e-3 and abs(after[1] - before[1]) > 1e-3  # the system prompt is damped
    assert after[2] == pytest.approx(before[2], abs=1e-5)  # a raw prompt is all user text: nothing to steer
    identity = TrustlabLM(tiny, steering_alpha=1.0)
    identity.apply_chat_template(CHAT)
    assert loglik(identity, pairs) == pytest.approx(before, abs=1e-4)
    assert loglik(plain, pairs) == pytest.approx(before, abs=1e-6)  # nothing left installed


def test_peft_model_is_scored(tiny):
    import copy

    import torch

    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(copy.deepcopy(tiny.model), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lm = TrustlabLM(model, tokenizer=tiny.tokenizer)
    pairs = [("The capital of France is", " Lyon"), ("A spider has", " eight legs")]
    base = loglik(TrustlabLM(tiny), pairs)
    assert loglik(lm, pairs) == pytest.approx(base, abs=1e-5)  # LoRA starts as the identity
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    assert all(abs(a - b) > 1e-3 for a, b in zip(loglik(lm, pairs), base))  # the adapter is what is scored


def test_model_args_from_the_command_line(tiny_dir):
    lm = TrustlabLM.create_from_arg_string(f"spec={tiny_dir},dtype=float32,steering_alpha=0.5,defense=backtranslation,"
                                           "defense_gamma=-3", {"batch_size": "2", "device": "cuda:0",
                                                                "max_batch_size": None})
    assert (lm.steering.alpha, lm.defense, lm.generator.gamma, lm.batch_size) == (0.5, "backtranslation", -3.0, 2)
    assert lm.get_model_info()["trustlab_model"]["dtype"] == "float32"


def test_steering_through_lm_eval_evaluation(tiny_dir):
    """The model type by name through lm-eval's evaluator (registry, arg string, chat template, tasks)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(tasks_path()))
    resps = {}
    for alpha in ("", ",steering_alpha=0.5"):
        out = lm_eval.simple_evaluate(model="trustlab", model_args=f"spec={tiny_dir},dtype=float32{alpha}",
                                      tasks=["trustlab_cf_qa_mc"], limit=2, apply_chat_template=True,
                                      task_manager=manager, batch_size=4, device="cpu", log_samples=True)
        resps[alpha] = [float(r[0][0]) for s in out["samples"]["trustlab_cf_qa_mc"] for r in s["resps"]]
        assert out["config"]["steering_alpha"] == (0.5 if alpha else None)
    assert max(abs(a - b) for a, b in zip(*resps.values())) > 1e-3


def test_backtranslation_defense_answers_generation_and_refuses_scoring(tiny):
    lm = TrustlabLM(tiny, defense="backtranslation")
    reqs = [Instance("generate_until", {}, (p, {"until": ["\n\n"], "max_gen_toks": 8}), i, task_name="t")
            for i, p in enumerate(["How do I bake bread?", "Name a colour."])]
    texts = lm.generate_until(reqs, disable_tqdm=True)
    traces = {t["prompt"]: t for t in lm.defense_traces}
    assert len(lm.defense_traces) == 2 and texts == [traces[r.args[0]]["output"] for r in reqs]
    assert all(t["initial_refusal"] or t["backtranslation"] is not None for t in lm.defense_traces)
    with pytest.raises(CapabilityError, match="defense=backtranslation"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("a", " b"), 0, task_name="t")])


@pytest.mark.server
@pytest.mark.slow
def test_generation_on_an_openai_compatible_server(llama_server):
    """Chat-templated requests reach the server as messages (/chat/completions), raw ones as text."""
    lm = TrustlabLM(f"openai:{llama_server.base_url}", model_name=llama_server.model_alias, probe=False)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = lm.apply_chat_template(messages)
    assert json.loads(chat) == messages
    gen_kwargs = {"until": ["\n\n"], "max_gen_toks": 12}
    texts = lm.generate_until([Instance("generate_until", {}, (ctx, gen_kwargs), i)
                               for i, ctx in enumerate([chat, "The capital of France is"])], disable_tqdm=True)
    direct = [lm.handle.generate([p], max_new_tokens=12, stop=("\n\n",), chat_template=c)[0][0].text
              for p, c in ((messages, True), ("The capital of France is", False))]
    assert texts == direct and all(t.strip() for t in texts)


# ------------------------------------------------------------------------------------------- the real CLI
def test_cli_tiny_model_matches_hf(cli):
    ours, hf = finished(cli, "tiny_ours", "tiny_hf")
    assert_parity(ours, hf, TINY_TASKS)
    assert math.isfinite(results(ours)["trustlab_verne_ppl"]["word_perplexity,none"])


@pytest.mark.slow
def test_cli_embedded_model_matches_hf(cli):
    ours, hf = finished(cli, "embedded_ours", "embedded_hf")
    assert_parity(ours, hf, EMBEDDED_TASKS)
    assert all(s["resps"][0][0].strip() for s in samples(ours, "trustlab_cf_qa"))  # real answers, not blanks


def test_cli_loglikelihood_on_a_server_without_prompt_logprobs_fails_clearly(cli):
    proc = cli["openai"][0].result()
    assert proc.returncode != 0
    assert "CapabilityError" in proc.stderr and "prompt log-probabilities" in proc.stderr
    assert "trustlab_cf_qa_mc" in proc.stderr
