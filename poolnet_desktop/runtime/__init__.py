"""asyncio services (coordinator, agent, discovery, storage). Never imports Qt."""
