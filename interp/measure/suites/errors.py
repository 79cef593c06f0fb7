"""What can go wrong with a benchmark suite, and the file format each one expects.
"""

from __future__ import annotations

from ...common.errors import InterpError


class SuiteError(InterpError):
    """A benchmark suite was asked for with an unknown name or options, or a saved result is
    unreadable."""


class SuiteFormatError(SuiteError):
    """A benchmark file is missing, empty, or not in the suite's format."""


FORMATS = {
    "winobias": (
        "WinoBias files named {pro,anti}_stereotyped_type{1,2}.txt.{dev,test} (as in "
        "github.com/uclanlp/corefBias, WinoBias/wino/data), one sentence a line, optionally "
        "after a line number, with the coreferent pronoun in brackets, e.g. "
        "'1 [The developer] argued with the designer because [he] did not like the design.'"
    ),
    "winogender": (
        "WinoGender's all_sentences.tsv (tab-separated, columns sentid and sentence; sentid like "
        "technician.customer.1.male.txt = occupation.participant.answer.gender.txt) and, beside "
        "it, occupations-stats.tsv (columns occupation, bergsma_pct_female, bls_pct_female)"
    ),
    "crows_pairs": (
        "CrowS-Pairs' crows_pairs_anonymized.csv (comma-separated, with columns sent_more, "
        "sent_less, stereo_antistereo in {stereo, antistereo} and bias_type)"
    ),
    "stereoset": (
        "StereoSet's dev.json: {\"version\": ..., \"data\": {\"intrasentence\": [...], "
        "\"intersentence\": [...]}}, each item with context, bias_type, target and sentences, "
        "a list of {sentence, gold_label} with one each of stereotype, anti-stereotype, unrelated"
    ),
}
