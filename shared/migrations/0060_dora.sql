-- DORA metrics (issue 14): deployments, problems, the service identity mapping, production environments.
-- All times are TIMESTAMP_NTZ in UTC (the functions convert every offset before writing).

-- One row per deployment id (idempotent: a retried or re-sent event updates its row).
-- SERVICE is the canonical service key (SERVICE_ALIASES applied); SOURCE_SERVICE is what the event named.
CREATE TABLE IF NOT EXISTS DEPLOYS (
    DEPLOY_ID VARCHAR NOT NULL,
    SERVICE VARCHAR NOT NULL,
    SOURCE_SERVICE VARCHAR,
    ENVIRONMENT VARCHAR NOT NULL,
    RESULT VARCHAR NOT NULL,
    STARTED_AT TIMESTAMP_NTZ,
    FINISHED_AT TIMESTAMP_NTZ NOT NULL,
    COMMIT_ID VARCHAR,
    COMMIT_TIME TIMESTAMP_NTZ,
    PIPELINE VARCHAR,
    RUN_ID VARCHAR,
    URL VARCHAR,
    REQUESTED_BY VARCHAR,
    SOURCE VARCHAR NOT NULL,
    EXTRA VARCHAR,
    UPDATED_AT TIMESTAMP_NTZ NOT NULL
);

-- One row per problem id, merged order-independently: STATE 'resolved' once any message resolved it,
-- PRIORITY the highest seen (P1 < P2 ...), STARTED_AT the earliest, RESOLVED_AT the first resolve.
CREATE TABLE IF NOT EXISTS PROBLEMS (
    PROBLEM_ID VARCHAR NOT NULL,
    PRIORITY VARCHAR NOT NULL,
    STATE VARCHAR NOT NULL,
    STARTED_AT TIMESTAMP_NTZ NOT NULL,
    RESOLVED_AT TIMESTAMP_NTZ,
    TITLE VARCHAR,
    URL VARCHAR,
    SOURCE VARCHAR NOT NULL,
    ROOT_CAUSE VARCHAR,
    SEVERITY VARCHAR,
    EXTRA VARCHAR,
    UPDATED_AT TIMESTAMP_NTZ NOT NULL
);

-- The services a problem impacts (canonical keys): the union over all its messages.
CREATE TABLE IF NOT EXISTS PROBLEM_SERVICES (
    PROBLEM_ID VARCHAR NOT NULL,
    SERVICE VARCHAR NOT NULL
);

-- Service identity: one key across pipelines, Dynatrace entities, ServiceNow CIs and the Backstage catalog.
CREATE TABLE IF NOT EXISTS SERVICE_MAP (
    SERVICE VARCHAR NOT NULL,
    SQUAD VARCHAR,
    COMPONENT VARCHAR,
    SOURCE VARCHAR NOT NULL,
    UPDATED_AT TIMESTAMP_NTZ NOT NULL
);

-- Any name a source uses for a service (pipeline, repository, Dynatrace entity id or name, CI), lower-case.
CREATE TABLE IF NOT EXISTS SERVICE_ALIASES (
    ALIAS VARCHAR NOT NULL,
    SERVICE VARCHAR NOT NULL,
    SOURCE VARCHAR NOT NULL
);

-- DORA_PRODUCTION_ENVIRONMENTS (the app setting), lower-case; the views count only these.
CREATE TABLE IF NOT EXISTS DORA_PRODUCTION_ENVIRONMENTS (
    ENVIRONMENT VARCHAR NOT NULL
);

INSERT INTO DORA_PRODUCTION_ENVIRONMENTS (ENVIRONMENT)
SELECT v.ENVIRONMENT FROM (SELECT 'production' AS ENVIRONMENT UNION ALL SELECT 'prod') v
WHERE NOT EXISTS (SELECT 1 FROM DORA_PRODUCTION_ENVIRONMENTS);

-- Azure resources mapped to Backstage components by the component tag (DORA_COMPONENT_TAG), lower-case ids.
CREATE TABLE IF NOT EXISTS COMPONENT_RESOURCES (
    RESOURCE_ID VARCHAR NOT NULL,
    COMPONENT VARCHAR NOT NULL,
    SOURCE VARCHAR NOT NULL,
    UPDATED_AT TIMESTAMP_NTZ NOT NULL
);
