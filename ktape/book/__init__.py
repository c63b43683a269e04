"""Order books from recorded rows: the checkpoint ladder format and the replay rule.

Why in the shared floor: queryd serves books at an instant and the datasets job writes
books into daily files; both must read checkpoints and apply changes by one rule, or a
file could disagree with the API.
"""
