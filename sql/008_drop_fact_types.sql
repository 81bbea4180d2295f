-- The fact queries return their rows as JSON arrays now (store._FACTS_SQL, store._BULK_FACTS_SQL);
-- nothing reads the composite row types of 004 any more.
DROP TYPE subject_fact, consent_fact, relationship_fact, objection_fact;
