"""A member: the agent that joins a pool, and the sandboxed runner of its shards."""
