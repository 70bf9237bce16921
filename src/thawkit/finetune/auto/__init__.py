"""`strategy=auto`: pick the strategy, learning rates and epochs from the data, and say why.

The textbook decision guide for transfer learning turns on two questions: how much data is
there, and how close is it to what the backbone was pretrained on? Three pieces answer them,
mechanism apart from policy:

- `probe`: measures the signals (images per class; linear probes of the frozen pretrained and
  of a randomly initialised backbone, giving a domain score), and decides nothing.
- `policy`: `AutoStrategy`, the decision table (thresholds from `strategy=auto`'s config):
  signals in, a `Decision` (strategy, settings, reasons) out; pure.
- `wiseft_rule`: when auto turns WiSE-FT on for its pick (a rule on the pick; `policy` applies
  it).
- `resolve`: writes a decision into the run's config (leaving the keys the user set), records
  it in the run dir's `auto.json`, and orders the steps (`resolve_auto`).

`thawkit.finetune.auto.AutoStrategy` is the `_target_` of src/thawkit/conf/strategy/auto.yaml.
"""

from thawkit.finetune.auto.policy import AUTO, FILLABLE, AutoStrategy, Decision
from thawkit.finetune.auto.probe import Signals, domain_score, measure, probe_score, probe_subset
from thawkit.finetune.auto.resolve import (
    RECORD,
    TARGET,
    apply,
    config_roots,
    explicit_keys,
    resolve_auto,
    strategy_config,
)

__all__ = [
    "AUTO",
    "FILLABLE",
    "RECORD",
    "TARGET",
    "AutoStrategy",
    "Decision",
    "Signals",
    "apply",
    "config_roots",
    "domain_score",
    "explicit_keys",
    "measure",
    "probe_score",
    "probe_subset",
    "resolve_auto",
    "strategy_config",
]
