"""Cost anomaly scoring: pure engine, baselines, synthetic data and the CSV contract."""
