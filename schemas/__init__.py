"""Avro schemas shipped with taskstream: the envelope contract."""
