"""DORA metrics: deployments and problems in, the four keys (and who failed what) out."""
