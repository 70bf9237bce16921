"""When `strategy=auto` turns WiSE-FT on for its pick (`strategy.wiseft`: one of WISEFT_WHEN).

The choice is a rule on the picked strategy alone; `AutoStrategy.weight_space`
(thawkit.finetune.auto.policy) writes it into the decision. The mixing itself:
thawkit.run.wiseft.
"""

from __future__ import annotations

# Picks whose WiSE-FT mix is a different model from both ends: the backbone trains. (With
# feature_extraction only the head moves; scratch has no pretrained start to mix with.)
BACKBONE_PICKS = ("partial", "gradual", "full", "two_phase", "lp_ft")
# Picks that train the head on frozen features before any backbone group, so the fine-tuned
# head continues the probe head that WiSE-FT's start uses: the published pairing
# (docs/weight_space.md).
SHARED_START = ("lp_ft", "two_phase", "gradual")


def wiseft_choice(chosen: str, when: str) -> tuple[bool, str]:
    """(on, reason) for pick `chosen` under `strategy.wiseft=when` (off, shared_start,
    backbone): never for a pick without backbone layers to mix; `shared_start` only where both
    ends share the head trained on frozen features first."""
    if chosen not in BACKBONE_PICKS:
        on = False
        why = (
            f"off: {chosen} trains no backbone layer, so a mix with the pretrained start "
            "would only mix heads"
            if chosen == "feature_extraction"
            else f"off: {chosen} has no pretrained start to mix with"
        )
    elif when == "off":
        on, why = False, "off (strategy.wiseft=off)"
    elif when == "shared_start" and chosen not in SHARED_START:
        on = False
        why = (
            f"off: {chosen} does not train the head on frozen features first, and "
            "strategy.wiseft=shared_start turns it on only when both ends share that head"
        )
    else:
        on = True
        shared = chosen in SHARED_START
        why = (
            f"on: {chosen} trains backbone layers"
            + (
                " from the head it first trains on frozen features (both ends share it)"
                if shared
                else ""
            )
            + "; after fit the mixes (1 - a) * start + a * fine-tuned are measured on "
            "validation and the best is kept, a = 1 (the fine-tuned model) among them, "
            "a = 0 the linear probe"
        )
    return on, why
