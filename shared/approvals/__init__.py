"""Approvals and guarded cost actions for critical cost anomalies, driven by Logic Apps over HTTP."""
