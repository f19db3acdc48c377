"""Ways to look at what landed: the data of one trace, its waterfall, and the list of traces.

Nothing here talks to the database (that is :mod:`agent.sink.traces`); these modules turn what
it read into terminal text and JSON.
"""
