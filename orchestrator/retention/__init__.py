"""Retention: settled batches archived and then removed from Redis, dead letters bounded,
so Redis memory stays bounded however long the service runs (`pruner`, `archive`,
`dead_letters`)."""
