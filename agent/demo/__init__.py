"""``hypertail demo``: a simulated application (:mod:`agent.demo.app`) and the command that
ingests what it wrote (:mod:`agent.demo.run`).

Nothing is imported here on purpose: the simulated app runs as its own process and must load
only what a real application would (``agent.emit``), not the agent that :mod:`agent.demo.run`
drives.
"""
