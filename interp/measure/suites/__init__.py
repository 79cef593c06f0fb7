"""Standard bias benchmarks read from the files a user has on disk, scored for causal LMs by
comparing the log-likelihoods of paired sentences.

Suites (each a loader `load_<suite>(path) -> DataFrame` and a scorer
`score_<suite>(model, frame) -> SuiteResult`; `run_suite(model, name, path)` does both):

- WinoBias (Zhao et al. 2018): `{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`.
- WinoGender (Rudinger et al. 2018): `all_sentences.tsv` and `occupations-stats.tsv`.
- CrowS-Pairs (Nangia et al. 2020): `crows_pairs_anonymized.csv`.
- StereoSet (Nadeem et al. 2021): `dev.json`.

Scoring convention. A sentence's score is its log-likelihood under the model, summed over its
tokens after the first: log p(x_2..x_n | x_1). Where the tokenizer itself adds a BOS token
(`bos=None`, the default, follows the tokenizer; `bos=True` forces one), the BOS is prepended and
every token is scored: log p(x_1..x_n | BOS). The bundled tokenizer adds none, so the first token
goes unscored and two sentences that differ only in their first token tie. Pair suites compare
whole sentences (`span="full"`, the default). `span="shared"` is the causal analogue of
CrowS-Pairs' own convention: only the tokens the two sentences share (a difflib alignment of
their token ids) are scored, each conditioned on everything before it, modified tokens included.
StereoSet compares sentences of different lengths, so it averages over tokens
(`normalize=True`), as StereoSet's own GPT-2 evaluation does.

Every share is in percent; ties count half (so a pair of identical sentences scores exactly 50).
Numbers that are means over items carry a 95% percentile-bootstrap interval (`<key>_lo`,
`<key>_hi`, from `interp.metrics.bootstrap_ci`); differences of group means, correlations
and ICAT get the same bootstrap over the items, resampled jointly.

One module per benchmark; `likelihood`, `stats`, `files`, `pronouns` and `result` are what they
share. This package is also the public namespace `interp.suites`.
"""


from .crows_pairs import load_crows_pairs, score_crows_pairs
from .errors import FORMATS, SuiteError, SuiteFormatError
from .likelihood import continuation_logprobs, pair_logprobs, sentence_logprobs, token_logprobs
from .pronouns import PRONOUN_GENDER, swap_pronoun
from .result import SuiteResult
from .run import SUITES, run_suite, suite_key
from .stereoset import STEREOSET_LABELS, STEREOSET_TASKS, load_stereoset, score_stereoset
from .winobias import load_winobias, parse_winobias_line, score_winobias
from .winogender import load_winogender, score_winogender

__all__ = [
    "FORMATS", "PRONOUN_GENDER", "STEREOSET_LABELS", "STEREOSET_TASKS", "SUITES", "SuiteError",
    "SuiteFormatError", "SuiteResult", "continuation_logprobs", "load_crows_pairs",
    "load_stereoset", "load_winobias", "load_winogender", "pair_logprobs", "parse_winobias_line",
    "run_suite", "score_crows_pairs", "score_stereoset", "score_winobias", "score_winogender",
    "sentence_logprobs", "suite_key", "swap_pronoun", "token_logprobs",
]
