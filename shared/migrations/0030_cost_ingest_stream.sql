-- Real cost data at real scale (issue 10): the provider of each cost row, the reconciliation report of each run,
-- and the staging table a run is streamed into before it is swapped in (all-or-nothing per run).

ALTER TABLE COST_DAILY ADD COLUMN IF NOT EXISTS PROVIDER VARCHAR;

ALTER TABLE COST_EXPORT_RUNS ADD COLUMN IF NOT EXISTS REPORT VARCHAR;

-- Partial aggregates of a run being loaded, under its LOAD_ID; merged (GROUP BY) into COST_DAILY in the
-- transaction that replaces the run's period, then deleted. A failed load deletes its rows.
CREATE TABLE IF NOT EXISTS COST_DAILY_STAGE (
    LOAD_ID VARCHAR NOT NULL,
    USAGE_DATE DATE NOT NULL,
    RESOURCE_ID VARCHAR NOT NULL,
    SERIES_BUCKET INTEGER NOT NULL,
    SUBSCRIPTION_ID VARCHAR,
    RESOURCE_GROUP VARCHAR,
    SERVICE_NAME VARCHAR,
    METER VARCHAR,
    OWNER VARCHAR,
    COST_CENTER VARCHAR,
    ENVIRONMENT VARCHAR,
    CHARGE_CATEGORY VARCHAR NOT NULL,
    IS_USAGE BOOLEAN NOT NULL,
    COST NUMBER(20, 6) NOT NULL,
    BILLED_COST NUMBER(20, 6),
    CURRENCY VARCHAR,
    PROVIDER VARCHAR
);
