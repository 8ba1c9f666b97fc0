"""trustlab inside other evaluation tools.

- :mod:`trustlab.integrations.lm_eval`: any trustlab model (steered or defended) as the lm-evaluation-harness
  model type ``trustlab``, and trustlab's benchmarks as lm-eval tasks (``lm_eval_tasks/``, an include path).

Submodules import their tool on import; this package imports nothing.
"""
