-- A JSON record's fields besides its document (a Kafka message's topic, partition, offset, key
-- and timestamp), as a JSON object: with the payload, what `ckm ingest --replay-dead-letters`
-- needs to map the record again as it was read, when its source no longer holds it.
ALTER TABLE dead_letters ADD COLUMN meta VARCHAR;
