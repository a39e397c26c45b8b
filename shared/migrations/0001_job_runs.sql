-- Runs of the scheduled jobs: what ran, for which key (a scored date, a window), and how it ended.
CREATE TABLE IF NOT EXISTS JOB_RUNS (
    JOB VARCHAR NOT NULL,
    RUN_KEY VARCHAR NOT NULL,
    STARTED_AT TIMESTAMP_NTZ NOT NULL,
    FINISHED_AT TIMESTAMP_NTZ,
    STATUS VARCHAR NOT NULL,
    SUMMARY VARCHAR
);
