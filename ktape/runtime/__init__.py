"""Third-party servers ktape runs: pinned versions, Java selection, QuestDB and Envoy.

Used by the supervisor (`ktape up`) and by the test fixtures, so a test runs exactly the
server a user runs.
"""
