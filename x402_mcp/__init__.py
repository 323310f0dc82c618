"""x402-image-mcp: paid image tools for MCP clients, paid in USDC over the x402 protocol."""

__version__ = "0.1.0"
