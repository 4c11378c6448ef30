"""The read side of the server: pure query building over an asyncpg connection.

- :mod:`.params`: parse and validate query parameters (resolution rule, bucket alignment).
- :mod:`.sql`: rollup levels, range decomposition, parameterised filter conditions.
- :mod:`.dashboard`: the /aggregate response in one SQL statement plus numpy.
- :mod:`.packed`: merge packed latency histograms and read percentiles.
- :mod:`.raw_requests`: raw records with keyset cursors.
- :mod:`.dimensions`: distinct values for filter pickers.
"""
