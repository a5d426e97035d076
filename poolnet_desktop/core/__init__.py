"""Pure core: models, protocol schemas, allocation and scheduling. No I/O, asyncio or Qt."""
