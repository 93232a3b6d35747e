"""Blink science core: arrays and tables in, arrays and tables out. No Kafka, no Cassandra."""
