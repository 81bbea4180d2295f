-- The scrub reads a subject record only when it changes a decision: a business number (N1)
-- or one published for marketing (N9); for any other subject the engine decides as for an
-- unknown number. This index holds just those, so a batch of a scrub probes a small index
-- instead of the whole subjects table (store._BULK_FACTS_SQL).
CREATE INDEX subjects_marked_idx ON subjects (number)
    WHERE kind = 'business' OR published_for_marketing;
