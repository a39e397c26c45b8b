"""Policy-change remediation: Azure Policy state events -> coalesced remediation tasks or alerts."""
