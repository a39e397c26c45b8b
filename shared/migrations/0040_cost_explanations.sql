-- Cost anomaly explanations (issue 12): why each episode was flagged, as JSON text (camelCase keys, see
-- shared/costs/explain.py). Nullable: episodes recorded before it have none and are explained from their figures.
ALTER TABLE COST_ANOMALIES ADD COLUMN IF NOT EXISTS EXPLANATION VARCHAR;
