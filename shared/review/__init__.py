"""The anomaly review page: signed links from Teams cards, an HTML page per episode, feedback with history."""
