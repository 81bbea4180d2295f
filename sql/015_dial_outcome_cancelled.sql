-- A dial-time attempt can end `cancelled`: called off before anyone answered (the caller's
-- CANCEL while the decision was pending or the call rang, or an "allow" that reached the SIP
-- proxy after its deadline). It reached nobody, so it gives back what its decision used up
-- (N5, N6), as `no_answer` does.
ALTER TABLE dial_outcomes DROP CONSTRAINT dial_outcomes_status_check,
    ADD CONSTRAINT dial_outcomes_status_check
        CHECK (status IN ('answered', 'no_answer', 'busy', 'failed', 'rejected', 'cancelled'));
