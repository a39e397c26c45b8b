"""Azure DevOps: the one service-hook endpoint's parsing, authentication and dispatch by `eventType`."""
