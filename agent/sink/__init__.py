"""The database side: the only package that imports asyncpg.

``connect`` builds connection arguments from the settings, ``schema`` applies and checks
schema.sql, ``writer`` commits batches (rows, merges, dead letters and checkpoints in one
transaction) and ``classify`` turns driver errors into the error tree of :mod:`agent.errors`.
"""
