"""hypertail: tail structlog JSON lines and COPY them into PostgreSQL/TimescaleDB exactly once.

The application side lives in :mod:`agent.emit` (it imports nothing else of the agent but
:mod:`agent.contract`); everything else is the sidecar agent.
"""

__version__ = "0.1.0"
