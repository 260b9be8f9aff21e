"""Sans-IO wire layer: bytes <-> frames <-> messages, and NestJS pattern normalisation. No asyncio here."""
