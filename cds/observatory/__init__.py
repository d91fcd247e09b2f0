"""The observatory: how each model is doing, from what the node recorded.

- ``stats``: per model and version, per day / ISO week / month (or one range):
  studies processed, findings, positive rate, accept / correct / reject rates,
  time to feedback, time-to-result and job run time percentiles.
- ``export``: those figures aggregated per ISO week, de-identified and with
  small counts suppressed, for a regional or national observatory.
"""
