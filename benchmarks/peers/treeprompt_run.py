"""Run Tree-Prompting (``imodelsx.TreePromptClassifier``) on one job file; used by ``benchmarks/lsp_fit.py``.

It runs in whatever Python has ``imodelsx`` (a separate environment: imodelsx needs langchain, spacy, imodels
and dict_hash, which trustlab does not install), so it imports nothing from trustlab. Input: a JSON job
``{"checkpoint", "prompts", "verbalizer", "prompt_template", "tree_kwargs", "train": [[x, y]...],
"test": [[x, y]...]}``; output: a JSON report with accuracy, the model forward passes counted by a hook on the
model (learning and prediction separately), wall times, each prompt's training accuracy alone, and the prompts
the fitted tree kept.

imodelsx's ``__init__`` imports every imodelsx method (langchain, spacy and more); only ``imodelsx.treeprompt``
and ``imodelsx.llm`` are needed, so the package is registered without running its ``__init__``. The
classifier runs with its own defaults otherwise: batch size 1 (its batched path reads the logit at
``attention_mask.sum() - 1`` while its tokenizer pads on the left, which is wrong for padded rows), float32 on
CPU (its loader's choice), no feature cache.

Usage: ``python treeprompt_run.py JOB.json OUT.json``
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
import time
import types
from pathlib import Path


def _import_treeprompt():
    spec = importlib.util.find_spec("imodelsx")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("imodelsx is not installed in this Python: pip install imodelsx")
    package = types.ModuleType("imodelsx")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["imodelsx"] = package
    from imodelsx.treeprompt.treeprompt import TreePromptClassifier

    return TreePromptClassifier


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    tree_prompt_classifier = _import_treeprompt()
    import imodelsx.llm
    import numpy as np
    import torch

    torch.set_num_threads(int(job.get("threads", 1)))
    counts = {"forward": 0, "sequences": 0}
    loaded = {}
    load_hf_model = imodelsx.llm.load_hf_model

    def counting_loader(checkpoint, token=None):
        # one model for the whole run, with a hook that counts what the classifier sends through it
        if checkpoint not in loaded:
            model = load_hf_model(checkpoint, token=token)

            def hook(module, args, kwargs):
                ids = kwargs.get("input_ids", args[0] if args else None)
                counts["forward"] += 1
                counts["sequences"] += int(ids.shape[0]) if ids is not None else 0

            model.register_forward_pre_hook(hook, with_kwargs=True)
            loaded[checkpoint] = model
        return loaded[checkpoint]

    imodelsx.llm.load_hf_model = counting_loader
    classes = sorted(job["verbalizer"])
    index = {c: i for i, c in enumerate(classes)}
    verbalizer = {i: job["verbalizer"][c] for i, c in enumerate(classes)}
    xs = [x for x, _ in job["train"]]
    ys = np.array([index[y] for _, y in job["train"]])
    clf = tree_prompt_classifier(checkpoint=job["checkpoint"], prompts=job["prompts"], verbalizer=verbalizer,
                                 tree_kwargs=job["tree_kwargs"], prompt_template=job["prompt_template"],
                                 cache_prompt_features_dir=None, verbose=False, random_state=job.get("seed", 0))
    t0 = time.perf_counter()
    clf.fit(xs, ys)
    fit_s = time.perf_counter() - t0
    fit_counts = dict(counts)
    counts.update(forward=0, sequences=0)
    tx = [x for x, _ in job["test"]]
    ty = np.array([index[y] for _, y in job["test"]])
    t0 = time.perf_counter()
    pred = clf.predict(tx)
    predict_s = time.perf_counter() - t0
    tree = clf.clf_.tree_
    report = {
        "accuracy": float(np.mean(pred == ty)),
        "n_test": len(tx),
        "fit_forward_sequences": fit_counts["sequences"],
        "fit_forward_calls": fit_counts["forward"],
        "predict_forward_sequences": counts["sequences"],
        "fit_s": fit_s,
        "predict_s": predict_s,
        "prompt_accuracies": [float(a) for a in clf.prompt_accs_],
        "prompts_kept": [int(i) for i in clf.prompts_idxs_kept],
        "tree_nodes": int(tree.node_count),
        "tree_leaves": int(tree.n_leaves),
        "model_dtype": str(next(iter(loaded.values())).dtype) if loaded else None,
        "imodelsx": importlib.metadata.version("imodelsx"),
    }
    tmp = Path(sys.argv[2]).with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(sys.argv[2])


if __name__ == "__main__":
    main()
