"""Backstage catalog refresh on `git.push`: changed catalog-info.yaml files -> entity refs -> refresh."""
