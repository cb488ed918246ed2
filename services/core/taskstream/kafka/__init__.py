"""The Kafka plumbing: a thin layer over confluent-kafka, a module per concern.

- :mod:`~taskstream.kafka.clients`: client configs (taskstream's defaults, the user's
  librdkafka settings, then the caller's), and reading a consumed record;
- :mod:`~taskstream.kafka.broker`: where an app's clients come from (the cluster, or the
  stub broker of the tests);
- :mod:`~taskstream.kafka.admin`: creating topics, and waiting until every broker knows them;
- :mod:`~taskstream.kafka.producer`: the idempotent, acks=all event producer;
- :mod:`~taskstream.kafka.topics`: the one place that names topics and consumer groups;
- :mod:`~taskstream.kafka.sizes`: how big a record is, and may be;
- :mod:`~taskstream.kafka.preflight`: a process's start-up check against its cluster;
- :mod:`~taskstream.kafka.rdkafka_log`: librdkafka's log through Python logging.

Nothing is imported here: :mod:`taskstream.config` reads the topics' constants, and the
clients read the settings.
"""
