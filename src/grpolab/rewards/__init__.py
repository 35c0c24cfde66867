"""Rewards: answer extraction, verifiers and weighted reward terms. Pure Python; no torch.

Importing this package registers the verifiers (numeric, math, countdown, list, code) and the tests_passed term.
"""

from grpolab.rewards import code, countdown, mathverify, sequence  # noqa: F401  (registers verifiers)
from grpolab.rewards.extract import extract_answer, has_answer_format, last_number, tagged_answer
from grpolab.rewards.terms import (RewardTerm, build_reward_terms, parse_reward_spec, register_reward_term,
                                   reward_term_names, score, total)
from grpolab.rewards.verify import Verdict, get_verifier, register_verifier, verifier_names, verify_numeric

__all__ = [
    "RewardTerm", "Verdict", "build_reward_terms", "extract_answer", "get_verifier", "has_answer_format",
    "last_number", "parse_reward_spec", "register_reward_term", "register_verifier", "reward_term_names", "score",
    "tagged_answer", "total", "verifier_names", "verify_numeric",
]
