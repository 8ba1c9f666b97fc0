"""Uncertainty estimation: CLUE (concept level), sequence-level baselines and UE metrics.

Estimators follow LM-Polygraph's convention: higher = more uncertain, compared with ROC-AUC and PRR.
"""

from trustlab.uncertainty.baselines import (
    EmbeddingSemanticEntropy,
    LexicalSimilarity,
    MaximumSequenceProbability,
    PredictiveEntropy,
    SampleSet,
    SelfCheckNLI,
    SemanticEntropy,
    entailment_clusters,
    rouge_l,
)
from trustlab.uncertainty.clue import CLUE, ConceptReport, ConceptScore, concept_uncertainty, pool_concepts
from trustlab.uncertainty.concepts import parse_concepts
from trustlab.uncertainty.metrics import bootstrap_ci, prr, roc_auc
from trustlab.uncertainty.nli import HFNLI, LLMNLI, load_nli

__all__ = [
    "CLUE", "HFNLI", "LLMNLI", "ConceptReport", "ConceptScore", "EmbeddingSemanticEntropy", "LexicalSimilarity",
    "MaximumSequenceProbability", "PredictiveEntropy", "SampleSet", "SelfCheckNLI", "SemanticEntropy", "bootstrap_ci",
    "concept_uncertainty", "entailment_clusters", "load_nli", "parse_concepts", "pool_concepts", "prr", "roc_auc", "rouge_l",
]
