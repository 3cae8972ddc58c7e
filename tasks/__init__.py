"""SeqIO data for CodeT5+: vocabularies, corpora, stage-1/2 and downstream tasks and mixtures.

`import tasks` registers the tasks and mixtures over the bundled corpus (this interpreter's
standard library) and HumanEval; `tasks.register_corpus(name, path, kind=...)` registers the same
set over a user corpus. Nothing is read or tokenized until a dataset is requested. See
docs/data.md.
"""

import gin
from tasks.completion_decoder import CompletionDecoderFeatureConverter
from tasks.downstream import register_alpaca
from tasks.instruct import InstructFeatureConverter, instruct_task
from tasks.registry import (
    DEFAULT_LENGTHS,
    corpus_mixture,
    corpus_names,
    feature_converter_for,
    register_corpus,
    register_defaults,
)
from tasks.retrieval_augmented import rag_task
from tasks.stage1 import Stage1FeatureConverter
from tasks.stage2 import BimodalFeatureConverter
from tasks.understanding import (
    ClassificationFeatureConverter,
    PairFeatureConverter,
    register_clone_pairs,
    register_defect,
    register_line_completion,
    register_poj104,
)
from tasks.vocabularies import CodeGenVocabulary, CodeT5Vocabulary, vocabulary_for_dir

gin.external_configurable(Stage1FeatureConverter, module="tasks")
gin.external_configurable(BimodalFeatureConverter, module="tasks")
gin.external_configurable(ClassificationFeatureConverter, module="tasks")
gin.external_configurable(PairFeatureConverter, module="tasks")
gin.external_configurable(CompletionDecoderFeatureConverter, module="tasks")

register_defaults()

__all__ = [
    "DEFAULT_LENGTHS",
    "PairFeatureConverter",
    "BimodalFeatureConverter",
    "ClassificationFeatureConverter",
    "InstructFeatureConverter",
    "CompletionDecoderFeatureConverter",
    "CodeGenVocabulary",
    "CodeT5Vocabulary",
    "Stage1FeatureConverter",
    "corpus_mixture",
    "corpus_names",
    "feature_converter_for",
    "instruct_task",
    "register_alpaca",
    "register_clone_pairs",
    "register_defect",
    "register_line_completion",
    "register_poj104",
    "rag_task",
    "register_corpus",
    "vocabulary_for_dir",
]
