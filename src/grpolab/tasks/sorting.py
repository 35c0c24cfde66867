"""A non-math logic task: put a list of words in alphabetical order. Levels by list length.

Higher levels also draw words that share first letters, so the order depends on later letters.
"""

from __future__ import annotations

import random
from typing import Any

from grpolab.tasks.base import Example, register_task
from grpolab.tasks.generated import GeneratedTask, check_generated

WORDS = tuple("""
apple apricot banana basil beach bell berry birch bread brick cable cactus camel candle canoe carpet castle cedar
chair chalk cherry cloud clover comet copper coral cotton crane daisy desert dolphin dragon drum eagle ember engine
falcon feather fern fiddle flame forest fossil fox garden garlic ginger glacier goat granite grape harbor hazel
helmet honey island ivory jacket jasmine jungle kettle kiwi ladder lagoon lantern lemon lily lizard maple marble
meadow melon mirror monkey mountain needle nest nickel oak ocean olive onion orange otter owl paddle panda parrot
peach pearl pebble pepper piano pillow pine planet plum pocket pond potato quartz quill rabbit radish raven ribbon
river robin rocket saddle salmon sand silver snail spider spruce squirrel star stone sugar sunset table thistle
tiger timber tomato tulip turtle valley velvet violet walnut whale willow window winter wolf yarn zebra
""".split())

LEVELS: dict[int, int] = {1: 3, 2: 5, 3: 8, 4: 12}  # level -> number of words


def make_draw(level: int):
    n = LEVELS[level]

    def draw(rng: random.Random) -> Example:
        if level >= 3:  # half the list shares a first letter with another word
            letter = rng.choice(sorted({w[0] for w in WORDS}))
            same = [w for w in WORDS if w[0] == letter]
            head = rng.sample(same, min(len(same), n // 2))
            rest = [w for w in WORDS if w not in head]
            words = head + rng.sample(rest, n - len(head))
            rng.shuffle(words)
        else:
            words = rng.sample(WORDS, n)
        shown = ", ".join(words)
        return Example(id=shown.replace(" ", ""), answer=", ".join(sorted(words)),
                       prompt=f"Sort these words in alphabetical order: {shown}. Give the sorted list, separated by "
                              "commas.",
                       meta={"items": words, "level": level})

    return draw


@register_task("sort", summary="sort words alphabetically (logic, not math)", levels=tuple(LEVELS))
def _build(cfg: Any, seed: int) -> GeneratedTask:
    level = check_generated(cfg, "sort", tuple(LEVELS))
    return GeneratedTask(f"sort(level={level})", cfg.verifier or "list", make_draw(level), eval_size=cfg.eval_size,
                         data_seed=cfg.data_seed, seed=seed, system_prompt=cfg.system_prompt,
                         info={"level": level, "words": LEVELS[level]})
