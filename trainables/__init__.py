"""What runs on a worker: the Ray Train loop and the pure-torch pieces below it.

Nothing in this package imports from `orchestrator`: data flows one way.
"""
