"""The consuming side: the worker that runs tasks and the materializer that stores results."""
