-- Feedback history of cost anomaly episodes (issue 13): one row per verdict given, never updated or
-- deleted, so who said what, when and why stays visible after a later verdict. COST_ANOMALIES.VERDICT
-- keeps the latest one for the scan.
CREATE TABLE IF NOT EXISTS COST_FEEDBACK (
    FEEDBACK_ID VARCHAR NOT NULL,
    EPISODE_ID VARCHAR NOT NULL,
    VERDICT VARCHAR NOT NULL,
    GIVEN_BY VARCHAR NOT NULL,
    AUTHENTICATED BOOLEAN NOT NULL,
    REASON VARCHAR,
    SOURCE VARCHAR NOT NULL,
    GIVEN_AT TIMESTAMP_NTZ NOT NULL
);
