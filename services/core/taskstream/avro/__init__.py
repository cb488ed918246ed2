"""The Avro stack: from a task's type hints to the bytes on the wire, and JSON at the edges.

- :mod:`~taskstream.avro.hints`: an Avro schema for each annotation, and its converters;
- :mod:`~taskstream.avro.values`: the checks and converters (Python values <-> Avro datums);
- :mod:`~taskstream.avro.codec`: single-object encoding, the only module that touches
  fastavro's reader and writer;
- :mod:`~taskstream.avro.json`: JSON <-> Avro datums, the one JSON path (HTTP, CLI, console);
- :mod:`~taskstream.avro.compat`: whether one schema's data reads with another (evolution).

The envelopes built on it are :mod:`taskstream.envelope`.
"""
