"""Background work: the import pipeline and the durable queue that runs it."""
