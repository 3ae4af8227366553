"""Experiments on the synthetic world that use the library end to end (nothing in the library imports them).

`towers`: stage 0 for random-init towers (dense labels drawn by the synthetic world).
`learn`: the learning proof — synthesize, stage 0, stage 1 ×2, merge, stage 2, evaluate, report, embed.
"""
