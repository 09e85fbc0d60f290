"""Process launcher: the only code that knows all four services exist.

It loads each service's composition root by name (services never import each other), runs
them in one process for the embedded runtime, or one service per process for direct/dapr.
"""
