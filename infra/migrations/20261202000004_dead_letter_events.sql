-- A projector applying an event from the event store (a gap fill) deletes that event's dead
-- letters in the same transaction, by projection and event id; without this index each such
-- event read the whole table, which a burst of poison messages can make large.
CREATE INDEX dead_letters_event_idx ON dead_letters (projection, event_id) WHERE event_id IS NOT NULL;
