"""Workflows below the canvas API (taskstream.canvas): the typed tree (tree), the task
events that start and continue it (events), and sending it (sending).

Imports nothing, so each module is imported by its own name."""
